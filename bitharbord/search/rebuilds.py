"""The ANN index's rebuilds: started in the background when the serving (or building) generation's searcher asks
for one, or at once for the scrub's repairs and the swap.

A rebuild's `RebuildJob.run()` runs in its own thread while searches and appends continue; it is installed (the
atomic manifest swap) on the index owner thread. A failed rebuild sets the RebuildFailed condition and is tried
again after REBUILD_RETRY_S."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from bitharbord.search.generations import Gen, Generations, fault_point
from bitharbord.search.metrics import SearchMetrics
from bitharbord.services import ServiceEnv

log = structlog.get_logger("bitharbord.search")

REBUILD_RETRY_S = 60.0


class Rebuilds:
    """One rebuild at a time; `refresh` is awaited after each install (the service's index facts)."""

    def __init__(self, generations: Generations, refresh: Callable[[], Awaitable[None]]) -> None:
        self.generations = generations
        self.refresh = refresh
        self.env: ServiceEnv | None = None
        self.metrics: SearchMetrics | None = None
        self.task: asyncio.Task[None] | None = None
        self.error: tuple[str, float] | None = None  # (why the last rebuild failed, when)
        self.retry_at = 0.0
        self.last: dict[str, Any] | None = None

    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def wait(self) -> None:
        """Wait for a background rebuild (a rebuild thread cannot be interrupted; its result is kept)."""
        if self.running():
            assert self.task is not None
            with contextlib.suppress(Exception):
                await self.task

    def maybe_start(self, gen: Gen | None) -> None:
        """Start a background rebuild of `gen` when its searcher asks for one (not while one runs, nor before the
        retry time after a failure)."""
        if gen is None or self.running():
            return
        if time.monotonic() < self.retry_at:
            return
        if gen.searcher.rebuild_reason() is None:
            return
        self.task = asyncio.ensure_future(self._guarded(gen))

    async def _guarded(self, gen: Gen) -> None:
        try:
            await self.rebuild(gen)
        except Exception as exc:
            self.error = (f"{type(exc).__name__}: {exc}", time.time())
            self.retry_at = time.monotonic() + REBUILD_RETRY_S
            if self.env is not None:
                self.env.metrics.errors.labels(where="search.rebuild").inc()
            log.error("search.rebuild_failed", embedder=gen.embedder, error=str(exc), exc_info=exc)

    async def after_running(self, gen: Gen) -> None:
        """Rebuild `gen` now, after a background rebuild already under way (one rebuild at a time)."""
        running = self.task
        if running is not None and not running.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(running)
        await self.rebuild(gen)

    async def rebuild(self, gen: Gen) -> None:
        call = self.generations.call
        reason = await call(gen.searcher.rebuild_reason)
        log.info("search.rebuild_start", embedder=gen.embedder, reason=reason)
        job = await call(gen.searcher.prepare_rebuild)
        built = await asyncio.to_thread(job.run)  # searches and appends go on meanwhile
        if gen.retired:  # the store was dropped meanwhile (its disk changed): the next pass starts afresh
            log.warning("search.rebuild_discarded", embedder=gen.embedder)
            return
        await fault_point("rebuild.before_install")
        info = await call(gen.searcher.install, built)
        self.error = None
        self.last = {"embedder": gen.embedder, "generation": info.get("generation"),
                     "at": info.get("started_at"), "duration_s": info.get("duration_s"),
                     "mode": info.get("mode"), "reason": reason, "rows": info.get("rows")}
        if self.metrics:
            self.metrics.rebuild_duration.observe(float(info.get("duration_s") or 0.0))
        await self.refresh()
