"""Home Assistant over MQTT: discovery messages and the retained node state."""
