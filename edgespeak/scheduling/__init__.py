"""Which announcement plays next: priority queue, expiry, dedup, preemption, stop."""
