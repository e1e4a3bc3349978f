"""Wanted titles: what the catalog service found for each `catalog.wanted` entry, and the download to start.

The network stays out of the plan: the catalog service (bitharbord/catalog/service.py) searches TMDB and the
Internet Archive in the background and records each entry's state and chosen files in SQLite. `observe`
only reads those rows; `diff` turns a matched entry into

    + catalog.title:nosferatu-1922: download nosferatu1922/Nosferatu.mp4 (h.264, 412 MB), ...

and says nothing for the others (a note says where each stands: searching, not found and when it is searched
again, downloading, waiting for ingest). `apply` hands the chosen download to the service (it marks the row
`downloading` and wakes the service), which downloads, verifies and ingests it. Entries are never removed:
an entry dropped from harbor.yaml keeps what it brought into the library.

Without TMDB (no key file, an unreadable one, a key TMDB rejected) the plan says so once, in one note:

    catalog: cannot read the TMDB API key file /etc/bitharbor/tmdb.key: no such file: films are found on the
    Internet Archive alone (year and runtime from its metadata) until the key file can be read; tmdb: entries...
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from bitharbord.catalog import entries as catalog_entries
from bitharbord.catalog.entries import file_line, human_size
from bitharbord.catalog.runtime import Clients
from bitharbord.config import Harbor
from bitharbord.links import PlanNote
from bitharbord.reconcile.plan import Action, Verb
from bitharbord.reconcile.provider import Context, Observed, Spec, TemporaryError
from bitharbord.store import catalog as store
from bitharbord.store import db
from bitharbord.store.wanted import DOWNLOADED, DOWNLOADING, FAILED, MATCHED, NOT_FOUND, SEARCHING

FILM_KINDS = ("title", "tmdb", "archive")  # the entries TMDB would help find
NEEDS_TMDB = (SEARCHING, NOT_FOUND, FAILED, MATCHED)  # the states a search without TMDB shows in


def db_path(harbor: Harbor) -> Path:
    return Path(harbor.paths.media_root) / db.DB_NAME


def _when(ts: float | None) -> str:
    if ts is None:
        return "soon"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def download_lines(have: Mapping[str, Any]) -> list[str]:
    """Every file a matched entry will download, as `plan` shows them."""
    if have.get("source") == "youtube":
        spec = have.get("spec") or {}
        cap = f"at most {human_size(have['size'])}" if have.get("size") else "no size cap"
        url = have.get("identifier") or ""
        if have.get("kind") in ("youtube_playlist", "youtube_channel"):
            what = "playlist" if have["kind"] == "youtube_playlist" else "channel"
            return [f"{url} (new videos of the {what}, at most {spec.get('max', 50)}; best single-file "
                    f"format, {cap} each)"]
        return [f"{url} (best single-file format, {cap})"]
    identifier = str(have.get("identifier") or "")
    return [file_line(identifier, f) for f in have.get("files") or []]


def _tmdb_problem(ctx: Context) -> PlanNote | None:
    """Why TMDB is not used: the running catalog service knows a key TMDB rejected; without it (`--once`,
    tests) what the config and the key file say."""
    service = ctx.links.catalog
    if service is not None and service.serves(db_path(ctx.harbor)):
        return service.tmdb_problem(ctx.harbor)
    return Clients().tmdb_problem(ctx.harbor)


class Catalog:
    kind: ClassVar[str] = "catalog"

    def desired(self, harbor: Harbor) -> Mapping[str, Spec]:
        return {
            e.key: {"key": e.key, "kind": e.kind, "entry": dict(e.spec), "requires": ["database.catalog"]}
            for e in catalog_entries.entries(harbor)
        }

    async def observe(self, ctx: Context, desired: Mapping[str, Spec]) -> Mapping[str, Observed]:
        found = await store.read_entries(db_path(ctx.harbor), list(desired))
        out = dict(store.observed(found or []))
        for key, spec in desired.items():  # wanted, but the service has not recorded it yet
            out.setdefault(key, {"key": key, "kind": spec["kind"], "origin": "config", "state": SEARCHING,
                                 "recorded": False})
        problem = _tmdb_problem(ctx)
        if problem is not None:  # each film entry says it is searched without TMDB; notes() says it once
            for key, o in out.items():
                if o.get("kind") in FILM_KINDS and o.get("state") in NEEDS_TMDB:
                    out[key] = {**o, "without_tmdb": problem.plan_note()}
        return out

    def diff(self, name: str, want: Spec | None, have: Observed | None) -> list[Action]:
        if have is None or have.get("state") != MATCHED:
            return []
        if want is None and have.get("origin") != "api":
            return []  # dropped from harbor.yaml: not fetched any more, never removed
        lines = download_lines(have)
        after: dict[str, Any] = {"source": have.get("source"), "identifier": have.get("identifier"),
                                 "download": lines}
        for k in ("title", "year", "tmdb_id", "score"):
            if have.get(k) is not None:
                after[k] = have[k]
        if have.get("size") is not None and have.get("source") == "archive":
            after["bytes"] = have["size"]
        requires = tuple(want.get("requires", ())) if want else ("database.catalog",)
        return [Action(f"{self.kind}.{name}", Verb.CREATE, None, after, "download " + ", ".join(lines),
                       requires=requires)]

    def notes(self, observed: Mapping[str, Observed]) -> list[str]:
        """Where each wanted entry stands when it has no action (pure, from the observed rows)."""
        out = sorted({str(o["without_tmdb"]) for o in observed.values() if o.get("without_tmdb")})
        for key, o in sorted(observed.items()):
            address = f"{self.kind}.{key}"
            if o.get("recorded") is False:
                out.append(f"{address}: searching (not searched yet)")
                continue
            state = o.get("state")
            if state == SEARCHING:
                if o.get("error"):
                    out.append(f"{address}: searching; last try: {o['error']}; next try {_when(o.get('next_try_at'))}")
                else:
                    out.append(f"{address}: searching")
            elif state == NOT_FOUND:
                why = f": {o['error']}" if o.get("error") else ""
                misses = int(o.get("misses") or 1)
                out.append(f"{address}: not found{why}; {misses} search{'es' if misses > 1 else ''} so far, "
                           f"next search {_when(o.get('next_try_at'))} (after 1, 3, 7, then every 30 days)")
            elif state == FAILED:
                out.append(f"{address}: failed: {o.get('error') or 'unknown error'}; "
                           f"next try {_when(o.get('next_try_at'))}")
            elif state == DOWNLOADING:
                what = f" {o['identifier']}" if o.get("identifier") else ""
                out.append(f"{address}: downloading{what} (progress: bitharborctl catalog list)")
            elif state == DOWNLOADED:
                out.append(f"{address}: downloaded, " + (o.get("error") or "ingesting"))
        return out

    async def apply(self, action: Action, ctx: Context) -> None:
        path = db_path(ctx.harbor)
        identifier = action.after.get("identifier") if action.after else None
        if not path.exists():
            raise TemporaryError(f"there is no catalog database at {path} yet")
        conn = await db.connect(path)
        try:
            if not await store.ready(conn):
                raise TemporaryError(f"the catalog tables are not in {path} yet (the database migrates first)")
            try:
                await store.approve(conn, action.name, identifier, time.time())
            except store.EntryChanged as exc:
                raise TemporaryError(str(exc)) from None
        finally:
            await conn.close()
        service = ctx.links.catalog  # the running catalog service fetches it now, not at its next poll
        if service is not None and service.serves(path):
            service.wake()
