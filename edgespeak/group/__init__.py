"""Group playback (issue 16): the shared clock, membership, and (built on them) plans and
relay. Layered between ``scheduling`` and ``speaking``; never imports an MQTT library: it
publishes through callables handed in by the daemon and is fed by
:mod:`edgespeak.inlets.mqtt.group`."""
