"""edgespeak: MQTT announcements spoken over a warm streaming-TTS WebSocket, played to ALSA."""

__version__ = "0.1.0"
