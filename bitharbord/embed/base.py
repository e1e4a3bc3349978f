"""The Embedder protocol every backend implements and the helpers they share (bitharbord/embed/loader.py picks
the backend harbor.yaml names).

An embedder turns items of one or more modalities into vectors of one shared space: float32, shape (n, dim),
each row of unit L2 norm (so cosine similarity is a dot product). Backends load their model lazily, on the
first encode (or an explicit `load()`), from local files only: nothing is ever downloaded."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from PIL import Image

Modality = Literal["text", "image", "video", "audio"]
MODALITIES: tuple[Modality, ...] = ("text", "image", "video", "audio")

Vectors: TypeAlias = npt.NDArray[np.float32]
"""(n, dim) float32, every row L2-normalised."""

ImageInput: TypeAlias = "str | os.PathLike[str] | Image.Image"
"""An image file path or an already decoded PIL image."""

VideoInput: TypeAlias = "Sequence[ImageInput]"
"""One video as frames sampled from it, in time order (paths or PIL images); at least one frame."""

AudioInput: TypeAlias = "str | os.PathLike[str] | tuple[npt.NDArray[np.floating[Any]], int]"
"""An audio file path, or (waveform, sample_rate) with waveform shaped (samples,) or (channels, samples)."""


class EmbedError(Exception):
    """An embedder could not be loaded or could not encode its input (the message says what and why)."""


FINGERPRINT_BLOCKS = 64
FINGERPRINT_BLOCK = 64 * 1024
_fingerprints: dict[tuple[str, int, int, int], str] = {}


def file_fingerprint(path: Path | str) -> str:
    """12 hex digits naming a weights file by its content: BLAKE3 over its size and 64 blocks of 64 KiB spread
    evenly through it (4 MiB read, milliseconds even for ImageBind's 4.5 GB; a copy elsewhere has the same
    fingerprint, other weights another). Remembered per (path, size, mtime, inode). Raises OSError."""
    from blake3 import blake3

    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    known = _fingerprints.get(key)
    if known is not None:
        return known
    h = blake3(st.st_size.to_bytes(8, "little"))
    with open(path, "rb") as f:
        if st.st_size <= FINGERPRINT_BLOCKS * FINGERPRINT_BLOCK:
            h.update(f.read())
        else:
            step = (st.st_size - FINGERPRINT_BLOCK) // (FINGERPRINT_BLOCKS - 1)
            for i in range(FINGERPRINT_BLOCKS):
                f.seek(i * step)
                h.update(f.read(FINGERPRINT_BLOCK))
    _fingerprints[key] = fp = h.hexdigest()[:12]
    return fp


class UnsupportedModality(EmbedError):
    """The embedder has no encoder for this modality (e.g. images with a text-only model)."""

    def __init__(self, embedder_id: str, modality: str, supported: Sequence[str]) -> None:
        self.embedder_id = embedder_id
        self.modality = modality
        self.supported = tuple(supported)
        super().__init__(
            f"embedder {embedder_id} cannot encode {modality}: it supports only "
            f"{', '.join(self.supported) or 'nothing'}"
            + ("; set `embedding.backend: imagebind` in harbor.yaml for images, video and audio"
               if modality != "text" else "")
        )


@runtime_checkable
class Embedder(Protocol):
    """What the ingest pipeline and the search path need from an embedding model."""

    @property
    def id(self) -> str:
        """Names the vector space: model and dimension, e.g. "minilm-l6-v2@384". Vectors of different ids never mix."""
        ...

    @property
    def dim(self) -> int: ...

    @property
    def modalities(self) -> frozenset[Modality]: ...

    def load(self) -> None:
        """Load the model now (otherwise the first encode does). Safe to call again and from several threads."""
        ...

    def encode_text(self, texts: Sequence[str]) -> Vectors: ...

    def encode_image(self, images: Sequence[ImageInput]) -> Vectors: ...

    def encode_video(self, videos: Sequence[VideoInput]) -> Vectors: ...

    def encode_audio(self, clips: Sequence[AudioInput]) -> Vectors: ...


# --------------------------------------------------------------------------- helpers for backends


def l2_normalise(x: npt.ArrayLike) -> Vectors:
    """Rows scaled to unit length, as float32. A zero row stays zero (it has no direction), never NaN."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-d array of vectors (n, dim), got shape {arr.shape}")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    out: Vectors = np.divide(arr, norms, out=np.zeros_like(arr), where=norms > 0)
    return out


def empty(dim: int) -> Vectors:
    return np.zeros((0, dim), dtype=np.float32)


def check_texts(texts: Sequence[str], embedder_id: str) -> list[str]:
    """The texts as a list, or a TypeError naming the first item that is not a string."""
    if isinstance(texts, str):
        raise TypeError(f"{embedder_id}.encode_text expects a list of strings, got a single string")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(f"{embedder_id}.encode_text: item {i} is {type(text).__name__}, expected str")
    return out


def default_threads() -> int:
    """Torch intra-op threads: the CPUs this process may use, at most 4 (a small box shares its cores)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(4, n))


def batches(n: int, size: int) -> list[slice]:
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]
