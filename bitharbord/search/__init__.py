"""The search domain: the embedding worker (worker.py), the vector-store generations and their swaps
(generations.py), the ANN rebuilds (rebuilds.py), answering queries (query.py), the index facts (stats.py) and
metrics (metrics.py), run by one service (service.py). Its routes live in api/search.py, its SQL in
store/embeddings.py."""
