"""``edgespeak serve``: a local server speaking the Fish live protocol, backed by espeak-ng."""
