"""The daemon on MQTT: connecting, the node's topics, the link (routes in, outbox out), and
its own commands (announce, stop, chime, volume)."""
