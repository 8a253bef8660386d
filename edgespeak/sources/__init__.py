"""Where an announcement's audio comes from: the phrase cache, synthesis flights over a
provider (teed into the cache), the warmer of pinned phrases, the offline engines."""
