"""``edgespeak serve``: a local TTS server speaking the Fish live protocol, Fish's HTTP TTS and
Cartesia's WebSocket, backed by Piper and espeak-ng."""
