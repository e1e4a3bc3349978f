"""The catalog: wanted titles (harbor.yaml's catalog.wanted), found, downloaded and handed to ingest.

One job per module: entries (keys of wanted entries), titles / archive_items / match (pure matching), archive /
tmdb / youtube (the upstream clients), finder (a film and its ranked copies), searching / transfers / handoff
(the service's jobs), status (how it shows), runtime (what the jobs share), service (the thin service).
The entries' states and retry schedule are the store's (store/wanted.py); the routes are api/catalog.py's.
"""
