"""The verify service: start a scrub (`POST /v1/verify`), its progress and the last report (`GET /v1/verify`;
the routes are api/verify.py's), the scheduled scrub (harbor.yaml `library.verify`: every `interval` seconds,
started inside the daily `window`, at `rate` MB/s, checks only), the condition `LibraryDamaged` and the
bitharbor_verify_* metrics.

The work is library/verify.py's; this module only hosts it. Repairs that touch the open vector stores go through
the search service (`env.links.search`: its `tombstone`, `rebuild` and `wake`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from bitharbord.config import Verify
from bitharbord.library import verify as domain
from bitharbord.services import DATABASE_DAMAGED, DATABASE_MISSING, Condition, ServiceEnv, database_fault

log = structlog.get_logger("bitharbord.library.verify")

RESULTS = ("clean", "repaired", "damaged", "problems", "failed")
CHECK_KINDS = ("database", "items", "vectors", "ann", "previews", "blobs")


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.runs = Counter("bitharbor_verify_runs_total", "Scrubs (bitharborctl verify, scheduled), by result.",
                            ["result"], registry=registry)
        self.bytes = Counter("bitharbor_verify_bytes_total", "Blob bytes re-hashed by scrubs.", registry=registry)
        self.problems = Gauge("bitharbor_verify_problems", "Problems the last scrub found, by check.", ["check"],
                              registry=registry)
        self.last_run = Gauge("bitharbor_verify_last_run_timestamp_seconds",
                              "Unix time the last scrub finished (0: none yet).", registry=registry)
        self.damaged = Gauge("bitharbor_library_damaged_items", "Items marked damaged (their blob was lost or "
                             "quarantined).", registry=registry)
        for r in RESULTS:
            self.runs.labels(result=r)
        for c in CHECK_KINDS:
            self.problems.labels(check=c)


def in_window(window: str, now: datetime) -> bool:
    start, end = ((int(t[:2]) * 60 + int(t[3:])) for t in window.split("-"))
    minute = now.hour * 60 + now.minute
    return start <= minute < end if start < end else (minute >= start or minute < end)


class VerifyService:
    name = "verify"

    def __init__(self, *, tick: float = 30.0) -> None:
        self.tick = tick
        self.env: ServiceEnv | None = None
        self._metrics: _Metrics | None = None
        self._task: asyncio.Task[domain.Report] | None = None
        self._progress: domain.Progress | None = None
        self._last: dict[str, Any] | None = None
        self._created: float | None = None  # when the catalog database was created (the first scrub is due after)
        self._last_error: str = ""
        self._db_damaged: tuple[str, float] | None = None  # the database cannot be read at all
        self._wake = asyncio.Event()

    # ------------------------------------------------------------------ hosting

    def bind(self, env: ServiceEnv) -> None:
        self.env = env
        if self._metrics is None or self._metrics.registry is not env.metrics.registry:
            self._metrics = _Metrics(env.metrics.registry)

    def wake(self) -> None:
        self._wake.set()

    def _library(self) -> tuple[domain.Library, Verify]:
        desired = self.env.desired() if self.env is not None else None
        if desired is None:
            raise domain.NotReady("no harbor.yaml is in force yet")
        h = desired.effective
        fault = database_fault(h)  # missing beside a library: pause with the reason (a 503); unreadable: verify says
        if fault is not None and fault[0] == DATABASE_MISSING:
            raise domain.NotReady(fault[1])
        return domain.Library(Path(h.paths.media_root), Path(h.paths.index_root)), h.library.verify

    async def run(self, env: ServiceEnv) -> None:
        self.bind(env)
        while not env.stop.is_set():
            self._wake.clear()
            with contextlib.suppress(domain.NotReady):
                lib, cfg = self._library()
                if self._last is None:
                    await self._load_last(lib)
                if self._due(cfg):
                    with contextlib.suppress(domain.VerifyError):
                        await self.start(domain.Options(repair=False, rate=cfg.rate, trigger="schedule"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.tick)
        if self._task is not None and not self._task.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._task), timeout=10)

    async def _load_last(self, lib: domain.Library) -> None:
        try:
            self._last = await domain.last_report(lib)
            self._created = await domain.catalog_created(lib)
        except Exception as exc:  # a damaged database: the scrub itself will say so
            self._last_error = f"{type(exc).__name__}: {exc}"
        self._publish()

    def _due(self, cfg: Verify) -> bool:
        if cfg.interval <= 0 or (self._task is not None and not self._task.done()):
            return False
        last = (self._last or {}).get("started_at")
        interrupted = (self._last or {}).get("result") == "interrupted"  # tried again in the next window
        since = last if last is not None else self._created  # a new library: one interval after it was created
        if since is None or (not interrupted and time.time() - float(since) < cfg.interval):
            return False
        return in_window(cfg.window, datetime.now())

    # ------------------------------------------------------------------ running

    async def start(self, options: domain.Options) -> int:
        """Start a scrub in the background; its run id. AlreadyRunning, NotReady, BadRequest."""
        domain.check_rate(options.rate)
        if self._task is not None and not self._task.done():
            raise domain.AlreadyRunning("a verify is already running: follow it with GET /v1/verify")
        lib, _ = self._library()
        ready = self.env.links.media_ready if self.env is not None else None
        if ready is not None:
            ok, reason = ready()
            if not ok:
                raise domain.NotReady(f"the media root is not available: {reason}")
        progress = domain.Progress()
        search = self.env.links.search if self.env is not None else None
        owner: domain.IndexOwner | None = search  # the search service owns the open vector stores
        stop = self.env.stop if self.env is not None else asyncio.Event()
        self._progress = progress
        self._task = asyncio.create_task(self._guarded(lib, options, owner, progress, stop), name="verify.run")
        self._task.add_done_callback(_retrieve)
        opened = asyncio.ensure_future(progress.opened.wait())
        await asyncio.wait({self._task, opened}, return_when=asyncio.FIRST_COMPLETED)
        opened.cancel()
        if self._task.done() and progress.run_id == 0:
            exc = self._task.exception()
            if isinstance(exc, domain.VerifyError):
                raise exc
            raise domain.VerifyError(f"the verify could not start: {exc}")
        return progress.run_id

    async def start_requested(self, *, repair: bool, rate: float | None) -> int:
        """A scrub asked for by a client (POST /v1/verify): at `rate` MB/s, or harbor.yaml's rate when None.
        Its run id; AlreadyRunning, NotReady, BadRequest, DatabaseDamaged, VerifyError."""
        _, cfg = self._library()
        return await self.start(domain.Options(repair=repair, rate=rate if rate is not None else cfg.rate,
                                               trigger="request"))

    async def current(self) -> dict[str, Any]:
        """The state (GET /v1/verify), with the last report read from the database if not known yet."""
        if self._last is None:
            with contextlib.suppress(domain.NotReady):
                await self._load_last(self._library()[0])
        return self.state()

    async def _guarded(self, lib: domain.Library, options: domain.Options, owner: Any,
                       progress: domain.Progress, stop: asyncio.Event) -> domain.Report:
        try:
            report = await domain.verify(lib, options, owner=owner, progress=progress, stopping=stop.is_set)
        except domain.Stopped:
            log.info("verify.stopped", run=progress.run_id)
            raise
        except domain.DatabaseDamaged as exc:
            self._db_damaged = (str(exc), time.time())
            if self._metrics:
                self._metrics.runs.labels(result="failed").inc()
            log.error("verify.database_damaged", error=str(exc))
            raise
        except domain.VerifyError:
            raise
        except Exception as exc:
            self._last_error = f"{type(exc).__name__}: {exc}"
            if self._metrics:
                self._metrics.runs.labels(result="failed").inc()
            if self.env is not None:
                self.env.metrics.errors.labels(where="verify").inc()
            log.error("verify.failed", run=progress.run_id, error=str(exc), exc_info=exc)
            raise
        finally:
            self._progress = None
        self._last, self._last_error, self._db_damaged = report.to_dict(), "", None
        ingest = self.env.links.ingest if self.env is not None else None
        if options.repair and ingest is not None:
            ingest.wake()  # previews queued again: made now rather than at ingest's next poll
        if self._metrics:
            self._metrics.runs.labels(result=report.result).inc()
            self._metrics.bytes.inc(report.bytes_hashed)
        self._publish()
        return report

    def _publish(self) -> None:
        if self._metrics is None or self._last is None:
            return
        per: dict[str, int] = dict.fromkeys(CHECK_KINDS, 0)
        for c in self._last.get("checks", []):
            kind = str(c["name"]).split(":", 1)[0]
            per[kind] = per.get(kind, 0) + int(c.get("problem_count", 0))
        for kind, n in per.items():
            self._metrics.problems.labels(check=kind).set(n)
        if self._last.get("finished_at"):
            self._metrics.last_run.set(float(self._last["finished_at"]))
        self._metrics.damaged.set(int(self._last.get("damaged") or 0))

    # ------------------------------------------------------------------ status

    def state(self) -> dict[str, Any]:
        schedule: dict[str, Any] = {}
        with contextlib.suppress(domain.NotReady):
            _, cfg = self._library()
            schedule = {"interval": cfg.interval, "window": cfg.window, "rate": cfg.rate}
        return {"running": self._progress.to_dict() if self._progress is not None else None,
                "last": self._last, "error": self._last_error or None, "schedule": schedule}

    def status(self) -> dict[str, Any]:
        st = self.state()
        return {**st, "last": _brief(self._last), "summary": summary(st)}

    def conditions(self) -> Sequence[Condition]:
        desired = self.env.desired() if self.env is not None else None
        fault = database_fault(desired.effective) if desired is not None else None
        if fault is not None and fault[0] == DATABASE_DAMAGED:  # SQLite cannot read it now, verify or not
            return [Condition("LibraryDamaged", True, fault[1])]
        if self._db_damaged is not None:
            return [Condition("LibraryDamaged", True, self._db_damaged[0], self._db_damaged[1])]
        last = self._last or {}
        result = last.get("result")
        if result in ("problems", "damaged") or int(last.get("damaged") or 0):
            parts = []
            if last.get("problems"):
                parts.append(f"{last['problems']} problem(s) found by verify #{last.get('id')}")
            if last.get("damaged"):
                parts.append(f"{last['damaged']} item(s) damaged (restore their files from a backup)")
            reason = "; ".join(parts) + "; see `bitharborctl verify` / `bitharborctl status -o json`"
            return [Condition("LibraryDamaged", True, reason, last.get("finished_at"))]
        why = f"verify #{last['id']}: {result}" if last else "no verify has run yet"
        return [Condition("LibraryDamaged", False, why)]


def _retrieve(task: asyncio.Task[domain.Report]) -> None:
    """The run's outcome is logged and kept by _guarded; this only marks its exception as seen."""
    if not task.cancelled():
        task.exception()


def _brief(last: dict[str, Any] | None) -> dict[str, Any] | None:
    if last is None:
        return None
    return {k: last.get(k) for k in ("id", "result", "problems", "damaged", "started_at", "finished_at",
                                     "trigger", "repair", "bytes_hashed")}


def summary(st: dict[str, Any]) -> str:
    """One line for `bitharborctl status`."""
    run = st.get("running")
    if run:
        return f"verify #{run['id']} running: {run['step']} ({run['step_index']}/{len(run['steps'])})"
    last = st.get("last")
    if not last:
        return "no verify has run yet"
    when = last.get("finished_at") or last.get("started_at")
    ago = f"{max(0.0, time.time() - float(when)) / 3600:.1f} h ago" if when else "at an unknown time"
    line = f"last verify #{last.get('id')} {ago}: {last.get('result')}"
    if last.get("problems"):
        line += f", {last['problems']} problem(s)"
    if last.get("damaged"):
        line += f", {last['damaged']} damaged item(s)"
    return line
