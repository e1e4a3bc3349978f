"""The library domain: checks and lossless repairs over the blobs, the catalog and the index (verify)."""
