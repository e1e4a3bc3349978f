"""The vector index on the index root, below the search service.

- vectors.py: VectorStore, the append-only store of canonical fp32 rows (canonical_vectors.py: their canonical
  form and hash; vector_files.py: its file names, errors and durable writes)
- ann/: the approximate nearest-neighbour backends behind one contract (hnsw, diskann, flat) and their registry
- nearest.py: the Searcher, k-NN over one store (ANN + fresh tail + exact re-rank, type filters); rebuild.py
  builds a new ANN generation off the searcher's thread; tuning.py: SearchConfig; locality.py: insertion order
- layout.py: where the stores live on the index root and which one serves; which embedder a config names
"""
