"""Local speech engines used by the server and, in-process, by the daemon's offline fallback."""
