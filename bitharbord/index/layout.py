"""Where the vector stores live on the index root, and which one serves.

    <index_root>/vectors/<embedder slug>/   one VectorStore per embedder (manifest.json, vectors.fp32,
                                            types.u16, tombstones.i64, ann/): its manifest.json is THE index
                                            manifest (embedder id, dimension, rows, installed ANN generation)
    <index_root>/vectors/current            symlink to the generation that serves searches

An embedder change re-embeds into a new generation beside the serving one; `current` is swapped (atomic
rename of a new symlink) once the new generation holds every item. Pure path helpers and read-only peeks:
the provider's `observe` uses them without opening (locking) a store."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

from bitharbord.config import Embedding
from bitharbord.embed.base import file_fingerprint
from bitharbord.index.vector_files import MANIFEST
from bitharbord.system.fsio import replace_durably, write_atomic

VECTORS_DIR = "vectors"
CURRENT = "current"
RETIRING = "retiring-for"  # in an old generation during a swap: the embedder id that replaces it
# What each backend's vectors are called, known without loading a model (the embedders report the same ids).
# ImageBind's id also carries its checkpoint's fingerprint: imagebind-huge-<12 hex>@1024.
EMBEDDERS: dict[str, tuple[str, int]] = {"minilm": ("minilm-l6-v2@384", 384),
                                         "imagebind": ("imagebind-huge@1024", 1024)}


class EmbedderUnavailable(Exception):
    """harbor.yaml's embedder cannot be used here (its checkpoint is missing, unreadable or not a checkpoint, its
    code is not installed, or it failed to load): the message says why."""


def named_embedder(config: Embedding) -> tuple[str | None, int]:
    """(embedder id, dimension) as far as harbor.yaml alone says, reading nothing: the id is None where it depends
    on the weights' content (imagebind: its checkpoint's fingerprint, which `embedder_for` reads)."""
    eid, dim = EMBEDDERS[config.backend]
    return (None if config.backend == "imagebind" else eid), dim


def embedder_for(config: Embedding) -> tuple[str, int]:
    """(embedder id, dimension) harbor.yaml's `embedding` asks for; EmbedderUnavailable if its weights are not
    there or its code cannot be imported (nothing can be embedded with it, so nothing should be planned for it).
    Cheap: no model is loaded (the search service reports a load that fails later the same way)."""
    return resolve_embedder(config.backend, config.checkpoint)


def resolve_embedder(backend: str, checkpoint: str | None) -> tuple[str, int]:
    """`embedder_for` from the backend name and checkpoint path: for imagebind, reads the checkpoint's fingerprint
    (4 MiB) and checks that the checkpoint and the package can load."""
    eid, dim = EMBEDDERS[backend]
    if backend == "imagebind":
        try:
            fp = file_fingerprint(str(checkpoint))
        except OSError as exc:
            raise EmbedderUnavailable(f"embedding.checkpoint {checkpoint}: {exc.strerror or exc} "
                                      "(ImageBind loads only a local checkpoint; nothing is downloaded)") from None
        from bitharbord.embed.base import EmbedError
        from bitharbord.embed.imagebind_setup import check_loadable

        try:
            check_loadable(str(checkpoint))
        except EmbedError as exc:
            raise EmbedderUnavailable(str(exc)) from None
        name, _, rest = eid.partition("@")
        eid = f"{name}-{fp}@{rest}"
    return eid, dim


def backend_of(embedder_id: str) -> str | None:
    """Which backend made vectors named `embedder_id` (minilm, imagebind), None if none of ours."""
    for backend, (eid, _) in EMBEDDERS.items():
        name = eid.partition("@")[0]
        if embedder_id == eid or (embedder_id.startswith(name + "-") and embedder_id.endswith(eid[len(name):])):
            return backend
    return None


def slug(embedder_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", embedder_id)


def vectors_root(index_root: Path | str) -> Path:
    return Path(index_root) / VECTORS_DIR


def generation_dir(index_root: Path | str, embedder_id: str) -> Path:
    return vectors_root(index_root) / slug(embedder_id)


def current_dir(index_root: Path | str) -> Path | None:
    """The serving generation's directory, None when there is none yet."""
    link = vectors_root(index_root) / CURRENT
    try:
        target = os.readlink(link)
    except (FileNotFoundError, OSError):
        return None
    path = vectors_root(index_root) / target
    return path if path.is_dir() else None


def read_manifest(store_dir: Path) -> dict[str, Any] | None:
    """A store's manifest.json, read-only; None when absent; {"error": ...} when unreadable."""
    try:
        data = json.loads((store_dir / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"error": f"{store_dir / MANIFEST}: unreadable manifest: {exc}"}
    return data if isinstance(data, dict) else {"error": f"{store_dir / MANIFEST}: not a JSON object"}


def set_current(index_root: Path | str, embedder_id: str) -> None:
    """Point `current` at the embedder's generation: a new symlink renamed over the old one (atomic)."""
    root = vectors_root(index_root)
    tmp = root / f".{CURRENT}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(slug(embedder_id), tmp)
    replace_durably(tmp, root / CURRENT)


def mark_retiring(store_dir: Path, successor: str) -> None:
    """Before `current` moves away from `store_dir`: say which embedder replaces it, so that a start after a crash
    between the swap and the old generation's removal finishes the removal (and one before the swap undoes it)."""
    write_atomic(store_dir / RETIRING, (successor + "\n").encode(), mode=0o644)


def retiring_for(store_dir: Path) -> str | None:
    """The successor a generation was being retired for, None when it is not being retired."""
    try:
        return (store_dir / RETIRING).read_text().strip() or None
    except OSError:
        return None


def unmark_retiring(store_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (store_dir / RETIRING).unlink()
