"""The process harness shared by the tests, the benchmarks and the demo: Mosquitto, PulseAudio,
``edgespeak serve`` and ``edgespeak run`` on loopback with ephemeral ports. Not part of the
wheel: a Pi runs none of it."""
