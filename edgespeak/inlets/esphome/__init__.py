"""Home Assistant's ESPHome native API: edgespeak as a media player (``[esphome]``).

Nothing here is imported unless ``[esphome] enabled``: its libraries (aioesphomeapi's
protobuf classes, noiseprotocol, zeroconf, miniaudio) come with ``edgespeak[esphome]``. What
the protocol is, with sources: docs/protocols.md §14.
"""
