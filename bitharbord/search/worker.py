"""The embedding worker: drains the items pending for the target embedder (store/embeddings.py: an `embed_queue`
row, or no live vector of that embedder) in batches, and keeps the queue's facts for the status.

Per batch: the document text of each item (embed/document.py over media_core + its type row; for an image
embedder also its thumbnail, a frame for videos) is encoded in a worker thread, the vectors appended durably to
the VectorStore, then ONE transaction inserts the idmap rows, retires the item's previous vector and deletes its
queue row. After a crash, rows the store has but idmap does not know are tombstoned when the store is opened
(generations.py), so nothing is embedded twice and nothing is lost. The model loads on the first batch or query,
never at daemon start; an embedder that cannot load fails no item (Generations.embedder_failed). Before each pass
that writes, the write guard says whether the index and media roots may be written."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite
import numpy as np
import structlog

from bitharbord.embed.base import Embedder, Vectors, l2_normalise
from bitharbord.embed.document import build_document
from bitharbord.index.vector_files import StoreChanged
from bitharbord.links import Links
from bitharbord.search.generations import Gen, Generations, Where
from bitharbord.search.metrics import SearchMetrics
from bitharbord.store import embeddings as store

log = structlog.get_logger("bitharbord.search")

WriteGuard = Callable[[Path], "str | None"]
"""Whether the service may write under a root (the index root, the media root): None when it may, else why not
(e.g. the pool's filesystem is not mounted there). Checked before each pass that writes."""


def encode_batch(embedder: Embedder, texts: list[str], images: list[Path | None]) -> Vectors:
    """The items' vectors: their text, plus their image for an embedder that encodes images (normalised)."""
    vecs = embedder.encode_text(texts)
    if "image" in embedder.modalities:
        which = [i for i, p in enumerate(images) if p is not None]
        if which:
            img = embedder.encode_image([images[i] for i in which])  # type: ignore[misc]
            vecs = vecs.copy()
            vecs[which] = l2_normalise(vecs[which] + img)
    return vecs


class Worker:
    """Embeds one batch per call of `embed_batch`; `note_error` records a problem for the service's status."""

    def __init__(self, generations: Generations, note_error: Callable[[str], None], *, batch_size: int,
                 write_guard: WriteGuard | None) -> None:
        self.generations = generations
        self.note_error = note_error
        self.batch_size = batch_size
        self.write_guard = write_guard
        self.metrics: SearchMetrics | None = None
        self.recent: deque[tuple[float, int]] = deque(maxlen=256)
        self.queue_depth: int | None = None
        self.pending_target: int | None = None
        self.embedded_total = 0
        self.failures: list[tuple[int, str]] = []
        self.queue_counts: tuple[int, int] | None = None  # (takeable, attempts ran out)
        self.blocked: str | None = None  # why the worker writes nothing now (paused, mismatch), None when it may

    def blocked_by_guard(self, where: Where, links: Links | None) -> str | None:
        """Why the worker must not write under the index or media root now, None when it may: the write guard
        given to the service, else the storage service's proof that each root is on its pool's own filesystem
        (`Links.root_is_ready`; every root may be written when no storage service runs)."""
        guard = self.write_guard
        if guard is None:
            if links is None:
                return None
            ready = links

            def guard(root: Path) -> str | None:
                ok, reason = ready.root_is_ready(str(root))
                return None if ok else reason
        for root in (where.index_root, where.media_root):
            why = guard(root)
            if why:
                return why
        return None

    async def refresh_queue(self, conn: aiosqlite.Connection, gen: Gen) -> None:
        """Read the queue's facts again (depth, what is takeable, what is left for `gen`, the failures)."""
        self.queue_depth = await store.queue_depth(conn)
        self.queue_counts = await store.queue_counts(conn)
        self.pending_target = await store.pending_count(conn, gen.embedder)
        self.failures = await store.failed(conn)
        if self.metrics:
            self.metrics.queue_depth.set(self.queue_depth)

    def throughput(self) -> float:
        """Items embedded per second over the last minute."""
        now = time.monotonic()
        recent = [(t, n) for t, n in self.recent if now - t <= 60]
        if not recent:
            return 0.0
        span = max(now - recent[0][0], 1.0)
        return round(sum(n for _, n in recent) / span, 2)

    def queue_facts(self) -> dict[str, Any]:
        """What the embedding worker will take, what it will not and why (for `bitharborctl queue`)."""
        gens = self.generations
        takeable, exhausted = self.queue_counts or (0, 0)
        unavailable = None
        if gens.unavailable:
            backend = gens.embedding_cfg.backend if gens.embedding_cfg is not None else "harbor.yaml's"
            unavailable = f"embedder {backend} unavailable: {gens.unavailable[0]}"
        return {"embedder": gens.writing_for, "takeable": 0 if self.blocked else takeable,
                "waiting": takeable if self.blocked else 0, "waiting_reason": self.blocked,
                "attempts_ran_out": exhausted, "reembed_blocked": unavailable}

    async def embed_batch(self, gen: Gen, where: Where, conn: aiosqlite.Connection) -> bool:
        """Embed the next batch for `gen`; True when there is more right away. Raises StoreChanged when the disk
        changed while the batch was encoded."""
        gens = self.generations
        if gens.load_failure(gen.embedder) is not None:
            return False
        embedder = gens.embedder(gen.embedder)
        if embedder is None:
            if await store.pending_count(conn, gen.embedder):
                self.note_error(f"no embedder for {gen.embedder} (check embedding in harbor.yaml)")
            return False
        batch = await store.next_batch(conn, gen.embedder, self.batch_size,
                                       wait_for_previews="image" in embedder.modalities)
        if not batch:
            return False
        try:
            await asyncio.to_thread(embedder.load)  # loads once; an embedder that cannot load fails no item
        except Exception as exc:
            await gens.embedder_failed(gen, exc)
            return False
        texts = [build_document(store.document_meta(p)) or f"{p.type} item {p.media_id}" for p in batch]
        images: list[Path | None] = []
        for p in batch:
            thumb = where.index_root / p.thumbnail if p.thumbnail else None
            images.append(thumb if thumb is not None and thumb.is_file() else None)
        t0 = time.monotonic()
        ok: list[store.Pending] = list(batch)
        try:
            vecs = await asyncio.to_thread(encode_batch, embedder, texts, images)
        except Exception:  # find the item(s) at fault: encode one by one
            ok, parts = [], []
            for p, text, image in zip(batch, texts, images, strict=True):
                try:
                    parts.append(await asyncio.to_thread(encode_batch, embedder, [text], [image]))
                    ok.append(p)
                except ImportError as exc:  # the embedder's code, not the item
                    await gens.embedder_failed(gen, exc)
                    return False
                except Exception as exc:
                    await store.record_failure(conn, p.media_id, f"{type(exc).__name__}: {exc}")
                    log.error("search.embed_failed", media_id=p.media_id, error=str(exc))
            if not ok:
                return True
            vecs = np.concatenate(parts)
        if gens.changed_under(where) is not None:  # the disk changed while the batch was encoded
            raise StoreChanged(str(gens.changed_under(where)))
        known = await store.max_row(conn, gen.embedder) + 1
        appended = await gens.call(gen.store.append, vecs, [p.type for p in ok], known_rows=known)
        items = [store.Embedded(p.media_id, int(r), p.type, h)
                 for p, r, h in zip(ok, appended.row_ids, appended.hashes, strict=True)]
        try:
            retired = await store.record_embedded(conn, gen.embedder, items, set_vector_row=gen is gens.serving)
        except BaseException:  # the rows were appended but not recorded: take them out of answers at once
            with contextlib.suppress(Exception):
                await gens.call(gen.searcher.delete, appended.row_ids)
            raise
        if retired:
            await gens.call(gen.searcher.delete, retired)
        took = time.monotonic() - t0
        self.embedded_total += len(items)
        self.recent.append((time.monotonic(), len(items)))
        if self.metrics:
            self.metrics.embedded.inc(len(items))
            self.metrics.embed_duration.observe(took)
        log.info("search.embedded", embedder=gen.embedder, count=len(items), first_media_id=items[0].media_id,
                 rows=f"{items[0].row_id}..{items[-1].row_id}", retired=len(retired), duration_s=round(took, 3))
        return len(batch) == self.batch_size
