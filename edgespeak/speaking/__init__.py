"""Turning one announcement into sound: chime, then cache hit / provider stream / fallback,
then playback on the sink, with the volume the user set."""
