"""The catalog database: the SQLite file exists, in WAL mode, with every named migration applied.

Never created or migrated on a bare mount point: while media_root's pool is missing nothing is planned (a note
says why), and apply proves the filesystem under it right before it writes.

Never created beside an existing library either: when `bitharbor.db` is missing (or is a file SQLite cannot read,
or one with no migration record) while blob files or vector stores are there, a new database would silently start
a second, empty library over the old one. Nothing is planned then; a note says what is missing, what is there and
what to do (restore it from a backup; services pause with the same reason, `DatabaseMissing` / `LibraryDamaged`).
Starting a new catalog anyway is a destructive action: `library.new_catalog: true` and `apply --allow-destroy`.
It leaves the old blob files where they are (`verify` reports them as blobs without a row; ingesting the same
file again reuses its blob) and sets the old vector stores aside, renamed, so nothing is deleted."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import structlog

from bitharbord.config import Harbor
from bitharbord.index.layout import vectors_root
from bitharbord.pools import state
from bitharbord.reconcile.plan import Action, Verb
from bitharbord.reconcile.provider import Context, Observed, Spec, TemporaryError
from bitharbord.store import db
from bitharbord.store.migrations import names

log = structlog.get_logger("bitharbord.providers.database")


def db_path(harbor: Harbor) -> Path:
    return Path(harbor.paths.media_root) / db.DB_NAME


class Database:
    kind: ClassVar[str] = "database"

    def desired(self, harbor: Harbor) -> Mapping[str, Spec]:
        return {
            "catalog": {
                "path": str(db_path(harbor)),
                "journal_mode": "wal",
                "migrations": names(),
                "requires": [f"dir.{harbor.paths.media_root}"],
                "vectors": str(vectors_root(harbor.paths.index_root)),
                "new_catalog": harbor.library.new_catalog,
            }
        }

    async def observe(self, ctx: Context, desired: Mapping[str, Spec]) -> Mapping[str, Observed]:
        out: dict[str, Observed] = {}
        for name, spec in desired.items():
            path = Path(spec["path"])
            why = await state.blocked(ctx, str(path.parent))
            if why:
                out[name] = {"path": spec["path"], "blocked": why}
                continue
            facts: db.DbFacts | None = None
            damaged = ""
            if path.exists():
                try:
                    facts = await db.inspect(path)
                except sqlite3.Error as exc:
                    damaged = f"{path}: SQLite cannot read it: {exc}"
            if facts is not None and facts.applied:
                out[name] = {"path": spec["path"], "journal_mode": facts.journal_mode,
                             "migrations": list(facts.applied)}
                continue
            # missing, unreadable or holding no migration record: a library beside it decides what may happen
            traces = await asyncio.to_thread(db.library_traces, path.parent, Path(spec.get("vectors", "")))
            if not traces:
                if damaged:
                    out[name] = {"path": spec["path"], "damaged": damaged}
                elif facts is not None:
                    out[name] = {"path": spec["path"], "journal_mode": facts.journal_mode, "migrations": []}
                continue  # a fresh install: created as always
            there = {"blobs": traces.blobs, "stores": list(traces.stores)}
            if path.exists():
                out[name] = {"path": spec["path"], "traces": there,
                             "damaged": damaged or f"{path}: holds no migration record (an empty or foreign file, "
                                                   "not a catalog database)"}
            else:
                out[name] = {"path": spec["path"], "traces": there, "missing": db.missing_reason(path, traces)}
        return out

    def diff(self, name: str, want: Spec | None, have: Observed | None) -> list[Action]:
        if want is None:
            return []
        address = f"{self.kind}.{name}"
        requires = tuple(want.get("requires", ()))
        after = {"path": want["path"], "journal_mode": want["journal_mode"],
                 "schema_version": want["migrations"][-1] if want["migrations"] else "none"}
        if have is not None and (have.get("blocked") or have.get("damaged")):
            return []  # notes() says why
        if have is not None and have.get("missing"):
            if not want.get("new_catalog"):
                return []  # notes() says why and what to do
            traces = have.get("traces") or {}
            return [Action(address, Verb.CREATE, None, {**after, "set_aside": want["vectors"]},
                           f"missing beside an existing library ({traces.get('blobs', 0)} blob file(s), "
                           f"{len(traces.get('stores', []))} vector store(s)): start a new, empty catalog "
                           "(library.new_catalog); the old blob files stay, unlisted (verify reports them), "
                           f"the vector stores under {want['vectors']} are renamed aside, not deleted",
                           destructive=True, opted_in=True, requires=requires)]
        if have is None:
            return [Action(address, Verb.CREATE, None, after,
                           f"missing; create with {len(want['migrations'])} migration(s): "
                           + ", ".join(want["migrations"]), requires=requires)]
        todo = db.pending(have["migrations"], )
        reasons = []
        if have.get("journal_mode") != want["journal_mode"]:
            reasons.append(f"journal_mode {have.get('journal_mode')} -> {want['journal_mode']}")
        if todo:
            reasons.append("migrate: " + ", ".join(todo))
        if not reasons:
            return []
        before = {"path": have["path"], "journal_mode": have.get("journal_mode"),
                  "schema_version": db.schema_version(have["migrations"])}
        return [Action(address, Verb.UPDATE, before, after, "; ".join(reasons), requires=requires)]

    def notes(self, observed: Mapping[str, Observed]) -> list[str]:
        out = []
        for name, o in sorted(observed.items()):
            if o.get("blocked"):
                out.append(f"{self.kind}.{name}: waiting: {o['blocked']}")
            elif o.get("missing"):
                out.append(f"{self.kind}.{name}: {o['missing']}")
            elif o.get("damaged"):
                out.append(f"{self.kind}.{name}: the catalog database {o['damaged']}; nothing is created or "
                           f"migrated over it: restore {db.DB_NAME} from a backup (services pause until then)")
        return out

    async def apply(self, action: Action, ctx: Context) -> None:
        assert action.after is not None
        path = Path(action.after["path"])
        await state.require_proven(ctx, str(path.parent))
        aside = action.after.get("set_aside")
        if aside and not path.exists():  # library.new_catalog with --allow-destroy: set the old stores aside
            vectors = Path(aside)
            if vectors.exists():
                await state.require_proven(ctx, str(vectors.parent))
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                target = vectors.with_name(f"{vectors.name}.before-new-catalog-{stamp}")
                await asyncio.to_thread(vectors.rename, target)
                log.warning("database.vectors_set_aside", vectors=str(vectors), to=str(target))
            log.warning("database.new_catalog", path=str(path))
        elif action.verb is Verb.CREATE and not path.exists():
            # re-checked right before writing: the plan may predate blob files or stores appearing
            vectors = vectors_root(ctx.harbor.paths.index_root)
            traces = await asyncio.to_thread(db.library_traces, path.parent, vectors, first_only=True)
            if traces:
                raise TemporaryError(db.missing_reason(path, traces))
        await db.migrate(path)
