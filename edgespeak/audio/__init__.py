"""Audio formats: an incremental Ogg reader/writer and an Ogg Opus decoder/encoder."""
