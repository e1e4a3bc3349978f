"""The catalog database: the SQLite file exists, in WAL mode, with every named migration applied.

Never created or migrated on a bare mount point: while media_root's pool is missing nothing is planned (a note
says why), and apply proves the filesystem under it right before it writes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from bitharbord.config import Harbor
from bitharbord.providers.base import Context, Observed, Spec
from bitharbord.reconcile.plan import Action, Verb
from bitharbord.storage import state
from bitharbord.store import db
from bitharbord.store.migrations import names


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
            }
        }

    async def observe(self, ctx: Context, desired: Mapping[str, Spec]) -> Mapping[str, Observed]:
        out: dict[str, Observed] = {}
        for name, spec in desired.items():
            why = await state.blocked(ctx, str(Path(spec["path"]).parent))
            if why:
                out[name] = {"path": spec["path"], "blocked": why}
                continue
            facts = await db.inspect(Path(spec["path"]))
            if facts is not None:
                out[name] = {"path": spec["path"], "journal_mode": facts.journal_mode,
                             "migrations": list(facts.applied)}
        return out

    def diff(self, name: str, want: Spec | None, have: Observed | None) -> list[Action]:
        if want is None:
            return []
        address = f"{self.kind}.{name}"
        requires = tuple(want.get("requires", ()))
        after = {"path": want["path"], "journal_mode": want["journal_mode"],
                 "schema_version": want["migrations"][-1] if want["migrations"] else "none"}
        if have is not None and have.get("blocked"):
            return []  # notes() says why
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
        return [f"{self.kind}.{name}: waiting: {o['blocked']}" for name, o in sorted(observed.items())
                if o.get("blocked")]

    async def apply(self, action: Action, ctx: Context) -> None:
        assert action.after is not None
        await state.require_proven(ctx, str(Path(action.after["path"]).parent))
        await db.migrate(Path(action.after["path"]))
