"""`load_embedder(config.Embedding)`: the embedder harbor.yaml names. It sits above the backends (base.py <
minilm.py, imagebind.py < loader.py), each imported only when asked for: importing torch and the model code
takes seconds."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bitharbord.embed.base import Embedder, EmbedError

if TYPE_CHECKING:
    from bitharbord.config import Embedding


def load_embedder(config: Embedding) -> Embedder:
    """The embedder harbor.yaml asks for. Cheap: the model itself loads on first use (or `load()`).

    For imagebind, a missing checkpoint file is reported here, before anything slow happens."""
    if config.backend == "minilm":
        from bitharbord.embed.minilm import MiniLMEmbedder

        return MiniLMEmbedder()
    if config.backend == "imagebind":
        if config.checkpoint is None:  # the config model already refuses this; keep mypy and readers sure
            raise EmbedError("embedding.backend imagebind needs embedding.checkpoint (a local .pth file)")
        checkpoint = Path(config.checkpoint)
        if not checkpoint.is_file():
            raise EmbedError(
                f"embedding.checkpoint {checkpoint} is not a file: ImageBind loads its weights only from a "
                "local checkpoint (nothing is downloaded); put imagebind_huge.pth there or fix the path"
            )
        from bitharbord.embed.imagebind import ImageBindEmbedder

        return ImageBindEmbedder(checkpoint)
    raise EmbedError(f"unknown embedding backend {config.backend!r}: expected minilm or imagebind")
