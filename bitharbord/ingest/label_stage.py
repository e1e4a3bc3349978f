"""Ingest's labelling stage: visual labels (`embed/labeller.py`) for every photo and video, from the thumbnails
the preview stage made (never the original file), in batches on the CPU.

Pending work is read from the catalog (`store/labels.py`: photos and videos with a thumbnail and no label run
for the current model), and each batch is recorded in one transaction with the items' embed_queue rows, so a
stop at any point resumes with the unlabelled items only: every item is labelled once per model, an existing
library included (its items are pending as soon as the model is new to them). A model that cannot be loaded
(its package missing) leaves items unlabelled and says so in `note`; ingest goes on.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Final

import structlog

from bitharbord.embed import labeller as labeller_mod
from bitharbord.embed.labeller import Labeller, LabelModelMissing, UnreadableImage
from bitharbord.store.ingest import IngestStore
from bitharbord.store.labels import Labelled, ToLabel

log = structlog.get_logger("bitharbord.ingest.labels")

LABEL_BATCH: Final = 32
RETRY_LOAD_S: Final = 600.0


class LabelStage:
    """Unlabelled photos and videos to labelled ones, one batch per `step`."""

    def __init__(self, store: IngestStore, *, index_root: Path, batch: int = LABEL_BATCH, threads: int = 2) -> None:
        self.store = store
        self.index_root = index_root
        self.batch = batch
        self.threads = threads
        self.model: Labeller | None = None
        self.note = ""  # why items stay unlabelled (the model cannot load), for the status page
        self._failed_at: float | None = None

    async def _load(self) -> Labeller | None:
        if self.model is not None:
            return self.model
        if self._failed_at is not None and time.monotonic() - self._failed_at < RETRY_LOAD_S:
            return None
        try:
            self.model = await asyncio.to_thread(Labeller, threads=self.threads)
        except LabelModelMissing as exc:
            self._failed_at = time.monotonic()
            self.note = f"visual labels off: {exc}"
            log.warning("labels.model_missing", error=str(exc))
            return None
        self.note = ""
        return self.model

    async def step(self) -> int:
        """One batch: returns how many items it labelled (0: none pending, or no model)."""
        model_name = labeller_mod.model_name()
        todo = await self.store.pending_labels(model_name, self.batch)
        if not todo:
            return 0
        model = await self._load()
        if model is None:
            return 0
        started = time.monotonic()
        done = await asyncio.to_thread(self._label, model, todo)
        written = await self.store.record_labels(model_name, done)
        log.info("labels.batch", items=len(todo), written=written, model=model_name,
                 seconds=round(time.monotonic() - started, 3))
        return len(todo)

    def _label(self, model: Labeller, todo: list[ToLabel]) -> list[Labelled]:
        inputs = []
        out: list[Labelled] = []
        ok: list[ToLabel] = []
        for item in todo:
            path = self._thumbnail(item)
            try:
                inputs.append(labeller_mod.load_image(path))
                ok.append(item)
            except UnreadableImage as exc:
                log.warning("labels.unreadable", media_id=item.media_id, reason=exc.reason)
                out.append(Labelled(item.media_id, (), error=exc.reason))
        for item, labels in zip(ok, model.classify(inputs), strict=True):
            out.append(Labelled(item.media_id, [(lab.label, lab.words, lab.score) for lab in labels]))
        return out

    def _thumbnail(self, item: ToLabel) -> Path:
        path = (self.index_root / item.thumbnail).resolve()
        if not path.is_relative_to(self.index_root.resolve()):
            return self.index_root / ".outside"  # never read outside the index root: reads as no such file
        return path
