"""The ingest work loops of one session: three workers and a ticker, until the session ends.

* front: hash, link what the catalog has, probe (woken at once when jobs are queued);
* back: store blobs, write the item rows;
* preview: thumbnails and clips;
* ticker: refreshes the status facts and the queue gauge, wakes the reconcile loop every
  `library.scan_interval` (a level-triggered rescan of the watch folders, whatever file events were missed),
  and sweeps old temp files every SWEEP_EVERY_S;
* places: once a session starts, looks up the places of items with GPS never looked up (`places.backfill`).

A worker pauses while the media storage is not ready (never writing to a bare mount point), backs off after an
error (reported as `worker_error` and counted in bitharbor_errors_total), and wakes the embedding worker when it
moved items. One failing worker ends the session (the others are cancelled); the service opens the next one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

import structlog

from bitharbord.ingest import places
from bitharbord.ingest.readiness import Session, Sessions
from bitharbord.ingest.status import StatusBoard
from bitharbord.services import ServiceEnv
from bitharbord.store.blobs import StorageChangedError

log = structlog.get_logger("bitharbord.ingest.service")

SWEEP_EVERY_S: Final = 600.0
WORKERS: Final = ("front", "back", "preview")


class Workers:
    def __init__(self, sessions: Sessions, board: StatusBoard, *, idle_poll_s: float = 1.0,
                 status_every_s: float = 1.0) -> None:
        self.sessions = sessions
        self.board = board
        self.idle_poll_s = idle_poll_s
        self.status_every_s = status_every_s
        self._wake = asyncio.Event()  # the front worker: new jobs

    def wake(self) -> None:
        """New jobs: the front worker looks now."""
        self._wake.set()

    async def run(self, env: ServiceEnv, session: Session) -> None:
        """Every worker and the ticker, until the session ends or one of them fails."""
        async with asyncio.TaskGroup() as group:  # one failing cancels the others
            for worker in WORKERS:
                group.create_task(self._work_loop(env, session, worker), name=f"ingest.{worker}")
            group.create_task(self._ticker(env, session), name="ingest.ticker")
            group.create_task(self._places(env, session), name="ingest.places")

    async def _places(self, env: ServiceEnv, session: Session) -> None:
        """Beside the workers, never in their way: load the GeoNames table (in a thread), then look up the places of
        the items with GPS that have none checked (ingested before places, before the table was loaded, or while it
        could not load: ingest/places.py `backfill`), again every BACKFILL_EVERY_S; the embedding worker is woken
        for the ones that got a place. A failure is logged and retried, never fatal."""
        if not await session.store.has_places():
            return
        sessions = self.sessions
        last: float | None = None
        while not env.stop.is_set() and sessions.current(env, session):  # the session ends when the workers do
            if last is None or time.monotonic() - last >= places.BACKFILL_EVERY_S:
                last = time.monotonic()
                try:
                    if await asyncio.to_thread(places.geocoder) is None:
                        return  # cannot load (logged once by places): items keep their coordinates
                    n = await places.backfill(session.store)
                except Exception as exc:
                    log.warning("ingest.places_backfill_failed", error=f"{type(exc).__name__}: {exc}")
                    n = 0
                if n and env.links.search is not None:
                    env.links.search.wake()
            await sessions.sleep(env, self.idle_poll_s)

    async def _work_loop(self, env: ServiceEnv, session: Session, step_name: str) -> None:
        sessions = self.sessions
        failures = 0
        while not env.stop.is_set() and sessions.current(env, session):
            ok, reason = sessions.media_ready()
            if not ok:
                sessions.paused = f"media storage not ready: {reason}"
                await sessions.sleep(env, 2)
                continue
            if sessions.paused.startswith("media storage not ready"):
                sessions.paused = ""
            try:
                step = {"front": session.pipeline.front_step, "back": session.pipeline.back_step,
                        "preview": session.pipeline.preview_step}[step_name]
                n = await step()
            except StorageChangedError as exc:  # the pool went away under the session: pause, never write
                sessions.paused = f"media storage not ready: {exc}"
                log.warning("ingest.storage_changed", worker=step_name, error=str(exc))
                await sessions.sleep(env, 1)
                continue
            except Exception as exc:  # the database busy, a bug: report, back off, keep going
                failures += 1
                self.board.worker_error = f"{step_name}: {type(exc).__name__}: {exc}"
                log.exception("ingest.worker_error", worker=step_name, error=str(exc), failures=failures)
                if env.metrics is not None:
                    env.metrics.errors.labels(where=f"ingest.{step_name}").inc()
                await sessions.sleep(env, min(30.0, 2.0 ** min(failures, 5)))
                continue
            if failures:
                failures = 0
                self.board.worker_error = ""
            if n:  # items catalogued, relinked or previewed: the embedding worker need not wait for its poll
                search = env.links.search
                if search is not None:
                    search.wake()
            if n == 0:
                if step_name == "front":
                    self._wake.clear()
                    waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(env.stop.wait())]
                    await asyncio.wait(waiters, timeout=self.idle_poll_s, return_when=asyncio.FIRST_COMPLETED)
                    for w in waiters:
                        w.cancel()
                else:
                    await session.pipeline.wait_changed(self.idle_poll_s)

    async def _ticker(self, env: ServiceEnv, session: Session) -> None:
        """Status snapshot and queue gauge; wakes the reconcile loop every library.scan_interval (a level-
        triggered rescan of the watch folders, whatever file events were missed)."""
        last_scan = last_sweep = time.monotonic()
        while not env.stop.is_set() and self.sessions.current(env, session):
            try:
                await self.board.refresh(session)
            except Exception as exc:
                log.warning("ingest.status_failed", error=str(exc))
            desired = env.desired()
            interval = desired.effective.library.scan_interval if desired else 300
            if time.monotonic() - last_scan >= interval:
                last_scan = time.monotonic()
                env.wake_reconcile()
            if time.monotonic() - last_sweep >= SWEEP_EVERY_S:
                last_sweep = time.monotonic()
                try:
                    await session.pipeline.sweep_temp()
                except OSError as exc:
                    log.warning("ingest.sweep_failed", error=str(exc))
            await self.sessions.sleep(env, self.status_every_s)
