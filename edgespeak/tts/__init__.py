"""TTS providers: protocol messages and clients."""
