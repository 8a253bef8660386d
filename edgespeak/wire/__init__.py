"""Wire formats of the TTS protocols (Fish live, Cartesia WebSocket): message shapes and
protocol facts, no I/O. Shared by the clients (:mod:`edgespeak.providers`), the local server
(:mod:`edgespeak.server`) and config validation. Sources: docs/protocols.md §1, §2 and §6."""
