"""edgespeak benchmarks: numbers printed, nothing asserted."""
