"""Audio: decoders (Ogg Opus, streamed WAV, raw PCM), DSP (gain, fades, resampling) and the
ALSA sink."""
