"""edgespeak benchmarks: numbers printed, nothing asserted.

``python -m bench all|NAME [--quick]`` (bench/__main__.py): ``cache`` (cache-hit TTFA next to
aplay), ``stream`` (streamed TTFA overhead next to the Fish SDK, loopback and an emulated
internet link), ``footprint`` (startup, idle, CPU per second played, burst and soak RSS),
``capacity`` (the local server at 1, 5, 20 sessions at once), ``playback`` (a paced device:
underruns, interruption, chime gap); ``latency`` on its own (the daemon's view, Nagle's cost).
"""
