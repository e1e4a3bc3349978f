"""Search wired into the daemon: the embedding worker, the index's generations and rebuilds, /v1/search."""
