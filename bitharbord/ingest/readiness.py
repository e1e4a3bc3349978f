"""Whether ingest may work now, and the session it works in.

Ingest writes blobs under media_root, previews under index_root, and rows into the catalog database the config
in force names. `Sessions.open` opens that database (journal store + pipeline) once the media storage is ready
(the pools service's proof, `links.media_ready`, and index_root's) and the file is sound
(`services.database_fault`: missing beside a library, or unreadable, it waits and never creates one).
`Sessions.current` keeps asking whether the session still serves: the config still names its database and
the filesystems under it (and the file) are the ones it was opened on; otherwise the session ends and the next
one re-opens everything from disk. `paused` says why nothing is ingested ("" = not paused).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from bitharbord.config import Harbor
from bitharbord.ingest.errors import IngestUnavailable
from bitharbord.ingest.metrics import IngestMetrics
from bitharbord.ingest.pipeline import Pipeline
from bitharbord.services import ServiceEnv, database_fault
from bitharbord.store import db
from bitharbord.store.ingest import IngestStore, StoreNotReady
from bitharbord.system.mountinfo import FsIdentity, filesystem_identity

log = structlog.get_logger("bitharbord.ingest.service")


@dataclass
class Session:
    """The store and pipeline of one catalog database, for as long as the configuration names it."""

    harbor: Harbor
    db_path: Path
    store: IngestStore
    pipeline: Pipeline
    # filesystem_identity() of media_root, of the database file and of index_root when the session opened
    identity: tuple[FsIdentity | None, ...] = ()

    async def close(self) -> None:
        self.pipeline.close()
        await self.store.close()


def db_path_of(harbor: Harbor) -> Path:
    return Path(harbor.paths.media_root) / db.DB_NAME


def identity_of(harbor: Harbor, db_path: Path) -> tuple[FsIdentity | None, ...]:
    return (filesystem_identity(harbor.paths.media_root), filesystem_identity(db_path),
            filesystem_identity(harbor.paths.index_root))


class Sessions:
    """The session ingest works in (None while starting or paused), and why it waits."""

    def __init__(self, *, batch_size: int = 256) -> None:
        self.batch_size = batch_size
        self.env: ServiceEnv | None = None
        self.metrics: IngestMetrics | None = None  # the pipeline's observer
        self.session: Session | None = None
        self.paused = ""  # why nothing is ingested (no config, no database, media storage not ready); "" = not paused
        self.serving: Path | None = None  # the database path in force (from the moment the config names it)
        self._fault_checked_at = 0.0  # when current() last asked services.database_fault
        self._kick = asyncio.Event()  # waits for the database or the media storage: look again now

    def attach(self, env: ServiceEnv, metrics: IngestMetrics) -> None:
        self.env = env
        self.metrics = metrics

    def serves(self, db_path: str | Path) -> bool:
        """Whether ingest ingests into that catalog database (the one the config in force names)."""
        return self.serving is not None and Path(db_path) == self.serving

    def live(self) -> Session:
        """The session, or IngestUnavailable saying why there is none."""
        session = self.session
        if session is None:
            raise IngestUnavailable(f"ingest is not ready: {self.paused or 'starting up'}")
        return session

    def media_ready(self) -> tuple[bool, str]:
        """Whether the media storage is there to write to (storage's check; ready when there is none)."""
        env = self.env
        check = env.links.media_ready if env is not None else None
        if check is None:
            return True, ""
        try:
            ok, reason = check()
        except Exception as exc:  # a broken check must not make ingest write to a bare mount point
            return False, f"the storage readiness check failed: {exc}"
        desired = env.desired() if env is not None else None
        if ok and desired is not None:  # previews are written under index_root
            ok, reason = (env.links.root_is_ready(desired.effective.paths.index_root) if env is not None
                          else (True, "no storage service"))
            reason = reason if not ok else "media and index storage ready"
        return bool(ok), str(reason)

    def kick(self) -> None:
        """Look again now (the box changed)."""
        self._kick.set()

    async def sleep(self, env: ServiceEnv, seconds: float) -> None:
        """Wait `seconds`, less if stopped or kicked."""
        self._kick.clear()
        waiters = [asyncio.ensure_future(env.stop.wait()), asyncio.ensure_future(self._kick.wait())]
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()

    async def open(self, env: ServiceEnv) -> Session | None:
        """Wait until the session can open, open it and make it `session`; None once stopped."""
        failures = 0  # opening the database failed this many times in a row: wait longer each time (at most 60 s)
        while not env.stop.is_set():
            desired = env.desired()
            if desired is None:
                self.paused = "no harbor.yaml in force yet"
                await self.sleep(env, 2)
                continue
            harbor = desired.effective
            path = db_path_of(harbor)
            self.serving = path  # the library provider plans nothing for it while the media storage is not ready
            ok, reason = self.media_ready()
            if not ok:
                self.paused = f"media storage not ready: {reason}"
                await self.sleep(env, 2)
                continue
            fault = database_fault(harbor)  # missing beside a library, or unreadable: wait, never create one
            if fault is not None:
                self.paused = fault[1]
                await self.sleep(env, 2)
                continue
            identity = identity_of(harbor, path)
            try:
                store = await IngestStore.open(path)
            except StoreNotReady as exc:
                self.paused = str(exc)
                await self.sleep(env, 2)
                continue
            except (sqlite3.Error, OSError) as exc:  # out of inodes or space for the -wal file, an I/O error
                failures += 1
                self.paused = f"cannot open the catalog database {path}: {exc}"
                log.warning("ingest.open_failed", db=str(path), error=str(exc), attempt=failures)
                await self.sleep(env, min(60, 2 ** min(failures, 6)))
                continue
            media, index = identity[0], identity[2]
            pipeline = Pipeline(store, media_root=Path(harbor.paths.media_root),
                                index_root=Path(harbor.paths.index_root), runner=env.runner, observer=self.metrics,
                                batch_size=self.batch_size, media_device=media[0] if media else None,
                                index_device=index[0] if index else None)
            session = Session(harbor, path, store, pipeline, identity)
            if identity_of(harbor, path) != identity:  # it changed while opening: open again from disk
                await session.close()
                continue
            try:
                await pipeline.startup()
            except (sqlite3.Error, OSError) as exc:
                await session.close()
                failures += 1
                self.paused = f"cannot open the catalog database {path}: {exc}"
                log.warning("ingest.open_failed", db=str(path), error=str(exc), attempt=failures)
                await self.sleep(env, min(60, 2 ** min(failures, 6)))
                continue
            except BaseException:
                await session.close()
                raise
            self.session = session
            self.paused = ""
            return session
        return None

    def current(self, env: ServiceEnv, session: Session) -> bool:
        """The session serves while the config names its database and the filesystem under it (and the file) is
        the one it was opened on; otherwise it ends and the next one re-opens everything from disk."""
        desired = env.desired()
        if desired is None or db_path_of(desired.effective) != session.db_path or not session.db_path.exists():
            return False
        now = identity_of(session.harbor, session.db_path)
        if now != session.identity:
            log.warning("ingest.storage_changed", db=str(session.db_path), was=str(session.identity), now=str(now))
            return False
        if time.monotonic() >= self._fault_checked_at + 1.0:  # the file replaced in place (truncated, garbage)
            self._fault_checked_at = time.monotonic()
            fault = database_fault(session.harbor)
            if fault is not None:
                log.warning("ingest.database_fault", db=str(session.db_path), condition=fault[0], reason=fault[1])
                return False
        return True
