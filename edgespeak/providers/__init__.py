"""Streaming TTS providers: the Fish live and Cartesia clients over one connection policy,
and the voice list API."""
