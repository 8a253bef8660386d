"""The ``edgespeak`` command: run, serve, say, cache, voices, doctor, ha."""
