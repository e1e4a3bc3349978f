"""Embedders: items of several modalities -> unit vectors of one space.

base.py (the Embedder protocol and shared helpers) < the backends (minilm.py; imagebind.py with
imagebind_setup.py) < loader.py (`load_embedder`: the one harbor.yaml names). document.py: the text an item is
embedded as."""
