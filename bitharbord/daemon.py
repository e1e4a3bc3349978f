"""bitharbord: wires the parts. Named, guarded asyncio tasks; signals; sd_notify READY/STATUS/WATCHDOG."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import grp
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sdnotify
import structlog
from aiohttp import web

from bitharbord import __version__
from bitharbord import services as services_mod
from bitharbord.api.app import Handles, init_app
from bitharbord.config import ConfigError, Harbor, load, parse
from bitharbord.links import Links
from bitharbord.metrics import Metrics
from bitharbord.providers import registry
from bitharbord.reconcile import executor
from bitharbord.reconcile.loop import Desired, Loop, Reconciler
from bitharbord.reconcile.plan import Plan
from bitharbord.reconcile.provider import Context
from bitharbord.store import db
from bitharbord.system.fsio import write_atomic
from bitharbord.system.runner import ProcessRunner, Runner

log = structlog.get_logger("bitharbord")
GOOD_WHEN_TRUE = frozenset({"Ready"})
# Ready is false while a pool is not mounted (MountMissing); the reason names the missing disks too. A RAID pool
# that lost one disk but is mounted stays Ready (that is Degraded).
POOL_MISSING = ("MountMissing", "DiskMissing")


@dataclass(frozen=True)
class Settings:
    config_path: Path
    state_dir: Path
    sandbox: Path | None = None  # under --state-dir every managed path is rebased below this root
    socket_path: Path | None = None  # None: from harbor.yaml (server.socket.path)
    http: str | None = ""  # "" from harbor.yaml, None off, else HOST:PORT
    once: bool = False  # reconcile once and exit (no servers)

    @classmethod
    def sandboxed(cls, state_dir: Path, **kw: Any) -> Settings:
        state_dir = state_dir.resolve()
        return cls(config_path=kw.pop("config_path", None) or state_dir / "harbor.yaml", state_dir=state_dir,
                   sandbox=state_dir / "root", socket_path=kw.pop("socket_path", None)
                   or state_dir / "bitharbord.sock", **kw)


class Daemon:
    def __init__(self, settings: Settings, *, runner: Runner | None = None,
                 services: list[services_mod.Service] | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.runner = runner or ProcessRunner()
        self.stop = asyncio.Event()
        self.started = time.time()
        self.notifier = sdnotify.SystemdNotifier()
        self._desired: Desired | None = None
        self._config_stamp: tuple[int, int] | None = None
        self.config_error = ""
        self._conditions: dict[str, tuple[bool, float]] = {}  # type -> (status, since)
        self.bound_http: str | None = None
        self.reconciler = Reconciler(
            registry.providers(), self._context,
            journal=executor.Journal(settings.state_dir / "journal.jsonl"), metrics=self.metrics,
        )
        self.loop = Loop(self.reconciler, self.current_desired, stop=self.stop, on_pass=self._on_pass)
        self.services = registered() if services is None else services
        self.links = Links()  # each service sets its own field when it starts
        self.env = services_mod.ServiceEnv(desired=self.current_desired, stop=self.stop, metrics=self.metrics,
                                           runner=self.runner, wake_reconcile=self.loop.wake.set, links=self.links)

    # ------------------------------------------------------------------ desired state

    def _context(self, harbor: Harbor) -> Context:
        return Context(runner=self.runner, harbor=harbor, state_dir=self.settings.state_dir,
                       privileged=os.geteuid() == 0 and self.settings.sandbox is None, links=self.links)

    def _make_desired(self, harbor: Harbor, source: str, path: str) -> Desired:
        effective = harbor.rebased(self.settings.sandbox) if self.settings.sandbox else harbor
        return Desired(harbor, effective, source, path)

    def desired_from(self, source: Any, path: Any) -> Desired:
        """The desired state a request names: its config text, or (none given) the one in force."""
        if source is None:
            current = self.current_desired()
            if current is None:
                raise ConfigError([_no_config(self.settings.config_path)])
            return current
        if not isinstance(source, str):
            raise ConfigError([_problem(str(path or "request"), "config must be the text of a harbor.yaml")])
        name = str(path) if isinstance(path, str) and path else "harbor.yaml"
        return self._make_desired(parse(source, name), source, name)

    def current_desired(self) -> Desired | None:
        """The config file in force, re-read when it changes on disk (level-triggered: edits count too)."""
        path = self.settings.config_path
        try:
            st = path.stat()
        except FileNotFoundError:
            self._desired, self._config_stamp = None, None
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._config_stamp:
            self._config_stamp = stamp
            try:
                harbor = load(path)
            except ConfigError as exc:
                self.config_error = str(exc)
                log.error("config.invalid", path=str(path), error=str(exc))
                self.metrics.errors.labels(where="config").inc()
            else:
                self.config_error = ""
                self._desired = self._make_desired(harbor, path.read_text(), str(path))
                log.info("config.loaded", path=str(path), digest=harbor.digest)
        return self._desired

    def _store_config(self, desired: Desired) -> None:
        path = self.settings.config_path
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, desired.source.encode(), mode=0o640)
        st = path.stat()
        self._config_stamp = (st.st_mtime_ns, st.st_size)
        self._desired = Desired(desired.harbor, desired.effective, desired.source, str(path))
        self.config_error = ""

    # ------------------------------------------------------------------ plan / apply for the API

    async def plan(self, desired: Desired) -> Plan:
        async with self.reconciler.lock:
            return await self.reconciler.plan(desired)

    async def apply(self, desired: Desired, saved: Plan | None, *,
                    allow_destroy: bool) -> tuple[Plan, executor.ApplyReport]:
        async with self.reconciler.lock:
            plan = saved or await self.reconciler.plan(desired)
            # A saved plan is applied exactly or refused as stale; one made just now skips what changed meanwhile.
            stale = executor.StaleCheck.PLAN if saved is not None else executor.StaleCheck.ACTION
            report = await self.reconciler.apply(plan, desired, allow_destroy=allow_destroy, stop=self.stop,
                                                 stale=stale)
            # Not refused: harbor.yaml is now the desired state the loop keeps reconciling.
            self._store_config(desired)
        self.loop.wake.set()
        self._wake_services()
        return plan, report

    def handles(self) -> Handles:
        """What the API is given: this daemon's control surface (plan, apply, status) and its services."""
        return Handles.of(self, self.services)

    # ------------------------------------------------------------------ status

    @property
    def socket_group(self) -> str | None:
        d = self._desired
        return d.harbor.server.socket.group if d else None

    @property
    def token_file(self) -> str | None:
        d = self._desired
        return d.harbor.server.http.token_file if d else None

    def status(self) -> dict[str, Any]:
        d = self._desired
        schema = None
        if d is not None:
            with contextlib.suppress(Exception):
                schema = db.read_schema_version(Path(d.effective.paths.media_root) / db.DB_NAME)
        loop = self.loop.status.to_dict()
        sections = {service.name: service.status() for service in self.services}
        conditions = self.evaluate_conditions()
        return {
            "version": __version__,
            "uptime_s": round(time.time() - self.started, 1),
            "sandbox": str(self.settings.sandbox) if self.settings.sandbox else None,
            "config": {"path": str(self.settings.config_path), "digest": d.harbor.digest} if d else None,
            "schema_version": schema,
            "reconcile": loop,
            "conditions": conditions,
            "recent_actions": self.reconciler.journal.tail(20) if self.reconciler.journal else [],
            "services": sections,
        }

    def evaluate_conditions(self) -> list[dict[str, Any]]:
        """Every condition with its `since`; each is also the metric bitharbor_condition{type} and a transition
        to bad logs at error level (Ready is good when true; every other condition is bad when true)."""
        loop = self.loop.status
        found: list[dict[str, Any]] = [{
            "type": "Ready",
            "status": loop.last_result == "converged",
            "reason": loop.last_error or loop.last_result,
        }]
        found.append({"type": "ConfigInvalid", "status": bool(self.config_error), "reason": self.config_error})
        for service in self.services:
            found += [c.to_dict() for c in service.conditions()]
        found.append(self._database_missing())
        if found[-1]["status"]:  # no catalog database beside a library: not ready, whatever the loop says
            found[0].update(status=False, reason=f"DatabaseMissing: {found[-1]['reason']}")
        missing = [c for c in found if c["type"] in POOL_MISSING and c["status"]]
        if any(c["type"] == "MountMissing" for c in missing):  # a pool is not there: not ready, whatever the loop says
            found[0].update(status=False, reason="; ".join(f"{c['type']}: {c['reason']}" for c in missing))
        now = time.time()
        for c in found:
            kind, status = c["type"], bool(c["status"])
            before = self._conditions.get(kind)
            if before is None or before[0] != status:
                self._conditions[kind] = (status, c.get("since") or now)
                bad = status != (kind in GOOD_WHEN_TRUE)
                if bad:
                    log.error("condition.raised", condition=kind, reason=c.get("reason", ""))
                elif before is not None:
                    log.info("condition.cleared", condition=kind)
            c["since"] = c.get("since") or self._conditions[kind][1]
            self.metrics.condition.labels(type=kind).set(1 if status else 0)
        return found

    def _database_missing(self) -> dict[str, Any]:
        """DatabaseMissing: bitharbor.db is gone beside an existing library (services pause, nothing creates one)."""
        d = self.current_desired()
        if d is None:
            return {"type": services_mod.DATABASE_MISSING, "status": False, "reason": "no configuration applied yet"}
        ok, why = self.links.root_is_ready(d.effective.paths.media_root)
        if not ok:
            return {"type": services_mod.DATABASE_MISSING, "status": False, "reason": f"media storage not ready: {why}"}
        fault = services_mod.database_fault(d.effective)
        missing = fault is not None and fault[0] == services_mod.DATABASE_MISSING
        return {"type": services_mod.DATABASE_MISSING, "status": missing,
                "reason": fault[1] if fault is not None else "the catalog database is there"}

    async def _watch_conditions(self) -> None:
        while not self.stop.is_set():
            self.evaluate_conditions()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=15)

    def _wake_services(self) -> None:
        """The box changed (a database, an index store, a folder, another harbor.yaml): services look now
        instead of at their next poll, so status and work follow an apply at once."""
        for service in self.services:
            if isinstance(service, services_mod.Wakeable):
                service.wake()

    def _on_pass(self, st: Any) -> None:
        if st.last_applied:
            self._wake_services()
        self.evaluate_conditions()
        summary = st.last_result if not st.last_error else f"error: {st.last_error}"
        self.notify(f"STATUS={summary}; {st.pending} pending; pass {st.passes}"[:200])

    def notify(self, message: str) -> None:
        self.notifier.notify(message)

    # ------------------------------------------------------------------ running

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.current_desired()
        if self.settings.once:
            await self.loop.run_once()
            return 0 if self.loop.status.last_result in ("converged", "no configuration applied yet") else 1
        runner = web.AppRunner(init_app(self.handles()), handle_signals=False, access_log=None)
        await runner.setup()
        try:
            await self._serve(runner)
            self.notify("READY=1")
            self.notify(f"STATUS=serving; {self.loop.status.last_result}")
            log.info("daemon.ready", socket=str(self.socket_path), http=self.http_listen, version=__version__)
            tasks = [
                self._task("reconcile", self.loop.run),
                self._task("watch", self._watch),
                self._task("conditions", self._watch_conditions),
            ]
            tasks += [self._task(f"service.{s.name}", functools.partial(s.run, self.env)) for s in self.services]
            if os.environ.get("WATCHDOG_USEC"):
                tasks.append(self._task("watchdog", self._watchdog))
            await self.stop.wait()
            self.notify("STOPPING=1")
            log.info("daemon.stopping")
            # The reconcile task finishes the action in flight (the executor checks `stop` between actions).
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=120)
        finally:
            await runner.cleanup()
            if self.socket_path and self.socket_path.is_socket():
                self.socket_path.unlink()
        log.info("daemon.stopped")
        return 0

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("daemon.signal", signal=sig.name)
        self.stop.set()

    def _task(self, name: str, fn: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        async def guarded() -> None:
            while not self.stop.is_set():
                try:
                    await fn()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a task dying must not take the daemon with it silently
                    self.metrics.errors.labels(where=name).inc()
                    log.exception("task.crashed", task=name, error=str(exc))
                    await asyncio.sleep(1)

        return asyncio.create_task(guarded(), name=name)

    @property
    def socket_path(self) -> Path | None:
        if self.settings.socket_path:
            return self.settings.socket_path
        d = self._desired
        return Path(d.harbor.server.socket.path) if d else Path("/run/bitharbor/bitharbord.sock")

    @property
    def http_listen(self) -> str | None:
        if self.settings.http != "":
            return self.settings.http
        d = self._desired
        return d.harbor.server.http.listen if d else None

    async def _serve(self, runner: web.AppRunner) -> None:
        path = self.socket_path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_socket():
                path.unlink()  # a stale socket from a crash
            site = web.UnixSite(runner, str(path))
            await site.start()
            d = self._desired
            os.chmod(path, int(d.harbor.server.socket.mode, 8) if d else 0o660)
            group = self.socket_group
            if group:
                try:
                    os.chown(path, -1, grp.getgrnam(group).gr_gid)
                except (KeyError, PermissionError) as exc:
                    log.warning("socket.group_not_set", group=group, error=str(exc))
        listen = self.http_listen
        if listen:
            host, _, port = listen.rpartition(":")
            tcp = web.TCPSite(runner, host.strip("[]"), int(port))
            await tcp.start()
            self.bound_http = tcp.name

    async def _watch(self) -> None:
        """watchfiles only wakes the loop early; the periodic pass is the truth."""
        from watchfiles import awatch

        while not self.stop.is_set():
            config = self.settings.config_path
            d = self._desired
            folders = [w.path.rstrip("/") + "/" for w in d.effective.library.watch] if d else []
            existing = [p for p in [config.parent, *(Path(f) for f in folders)] if p.is_dir()]
            if not existing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=5)
                continue

            def relevant(_change: object, path: str, folders: list[str] = folders, config: str = str(config)) -> bool:
                return path == config or any(path.startswith(f) for f in folders)

            digest_before = d.harbor.digest if d else None
            # Changes made while the watcher (re)starts are not seen as events: one pass just after it is up
            # catches them (the pass is a level-triggered scan, so nothing is missed, only found later).
            asyncio.get_running_loop().call_later(1.0, self.loop.wake.set)
            log.debug("watch.start", paths=[str(p) for p in existing])
            async for _changes in awatch(*existing, stop_event=self.stop, debounce=500, recursive=True,
                                         watch_filter=relevant):
                log.debug("watch.changes", paths=sorted(p for _, p in _changes)[:20])
                self.loop.wake.set()
                now = self._desired
                if (now.harbor.digest if now else None) != digest_before:
                    break  # the watch list may have changed: start a new watcher

    async def _watchdog(self) -> None:
        interval = int(os.environ["WATCHDOG_USEC"]) / 1_000_000 / 2
        while not self.stop.is_set():
            self.notify("WATCHDOG=1")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=interval)


def registered() -> list[services_mod.Service]:
    """The services a real daemon runs, in start order."""
    from bitharbord.catalog.service import CatalogService
    from bitharbord.ingest.service import IngestService
    from bitharbord.library.verify_service import VerifyService
    from bitharbord.ops.bundles import BundleService
    from bitharbord.pools.service import StorageService
    from bitharbord.search.service import SearchService

    return [StorageService(), IngestService(), SearchService(), CatalogService(), BundleService(), VerifyService()]


def _problem(file: str, message: str) -> Any:
    from bitharbord.config import Problem

    return Problem(file, 0, 0, "", message)


def _no_config(path: Path) -> Any:
    return _problem(str(path), "no harbor.yaml is in force yet: give one (bitharborctl plan -f harbor.yaml)")
