"""The index store on the index root: one vector-store generation per embedder under `vectors/`, the serving one
named by the `vectors/current` symlink (see bitharbord/index/layout.py). The generation's own `manifest.json`
(written by VectorStore: embedder id, dimension, rows, installed ANN index) is the one index manifest.

- No generation yet: `+ index.store` creates the empty store of harbor.yaml's embedder and points `current` at it.
- harbor.yaml names another embedder than the serving generation's: `~ index.store` with the reason
  "embedder A -> B: re-embed N items, rebuild index". Apply creates the new generation; the search service
  re-embeds every item into it in the background while the old one keeps serving, then swaps `current`.
  Until the swap the plan shows the same action with the progress (so the plan converges when it is done).
- harbor.yaml's embedder cannot load here (imagebind: the checkpoint is missing, unreadable or not a PyTorch
  checkpoint, its package is not installed, or the daemon's search service failed to load it): nothing is
  planned (a store for weights that cannot embed would never fill); a note says why, and the serving generation
  keeps serving.

ImageBind's embedder id carries its checkpoint's fingerprint (`imagebind-huge-<12 hex>@1024`), so other
weights at the same path are another embedder: re-embedded, never mixed into the old store."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from bitharbord.config import Harbor
from bitharbord.index import layout
from bitharbord.index.vector_files import EmbedderMismatch, VectorStoreError
from bitharbord.index.vectors import VectorStore
from bitharbord.pools import state
from bitharbord.reconcile.plan import Action, Verb
from bitharbord.reconcile.provider import Context, Observed, Spec
from bitharbord.store import db
from bitharbord.store.db import DB_NAME


def manifest_for(harbor: Harbor) -> dict[str, Any]:
    """What the store should be; with `unavailable` (and no embedder) when harbor.yaml's weights are missing."""
    try:
        embedder, dim = layout.embedder_for(harbor.embedding)
    except layout.EmbedderUnavailable as exc:
        return {"embedder": None, "dim": None, "ann": harbor.index.backend, "unavailable": str(exc)}
    return {"embedder": embedder, "dim": dim, "ann": harbor.index.backend}


def _count(db_path: Path, embedder: str) -> tuple[int | None, int | None]:
    """(items in the catalog, items with a live vector of `embedder`), read-only; None where unknown."""
    if not db_path.exists():
        return None, None
    try:
        conn = sqlite3.connect(db.uri(db_path), uri=True, timeout=5)
    except sqlite3.Error:
        return None, None
    try:
        items = int(conn.execute("SELECT count(*) FROM media_core").fetchone()[0])
    except sqlite3.Error:
        conn.close()
        return None, None
    try:
        done = int(conn.execute("SELECT count(DISTINCT media_id) FROM idmap WHERE embedder=? AND deleted=0",
                                (embedder,)).fetchone()[0])
    except sqlite3.Error:  # idmap without its embedder column keying (before 0004_search)
        done = None
    finally:
        conn.close()
    return items, done


class IndexStore:
    kind: ClassVar[str] = "index"

    def desired(self, harbor: Harbor) -> Mapping[str, Spec]:
        root = harbor.paths.index_root
        return {"store": {"root": root, **manifest_for(harbor),
                          "db": str(Path(harbor.paths.media_root) / DB_NAME), "requires": [f"dir.{root}"]}}

    async def observe(self, ctx: Context, desired: Mapping[str, Spec]) -> Mapping[str, Observed]:
        out: dict[str, Observed] = {}
        for name, spec in desired.items():
            root = Path(spec["root"])
            why = await state.blocked(ctx, str(root))
            if why:  # the pool under index_root is missing: nothing is planned (dir.<index_root> notes why)
                out[name] = {"root": str(root), "blocked": why}
                continue
            serving = layout.current_dir(root)
            unavailable = spec.get("unavailable")
            search = ctx.links.search
            if not unavailable and spec.get("embedder") and search is not None:
                unavailable = search.load_failure(str(spec["embedder"]))  # it failed to load in the daemon
            if unavailable:  # nothing to plan; notes() says why
                out[name] = {"root": str(root), "serving": serving.name if serving else None,
                             "unavailable": unavailable}
                continue
            if serving is None:
                continue
            manifest = layout.read_manifest(serving)
            target = layout.generation_dir(root, str(spec["embedder"]))
            have: dict[str, Any] = {"root": str(root), "serving": serving.name, "manifest": manifest}
            if manifest is not None and manifest.get("embedder") != spec["embedder"]:
                items, done = _count(Path(spec["db"]), str(spec["embedder"]))
                have.update(items=items, reembedded=done if target.is_dir() else None)
            out[name] = have
        return out

    def diff(self, name: str, want: Spec | None, have: Observed | None) -> list[Action]:
        if have is not None and have.get("blocked"):
            return []  # its pool is missing: nothing on the bare mount point
        if want is None or want.get("unavailable") or (have is not None and have.get("unavailable")):
            return []
        address = f"{self.kind}.{name}"
        after = {k: want[k] for k in ("root", "embedder", "dim", "ann")}
        requires = tuple(want.get("requires", ()))
        if have is None:
            return [Action(address, Verb.CREATE, None, after,
                           f"missing: the vector store for {want['embedder']} "
                           f"(vectors/{layout.slug(want['embedder'])})",
                           requires=requires)]
        manifest = have.get("manifest")
        if not manifest or "error" in manifest:
            what = manifest["error"] if manifest else f"vectors/{have.get('serving')} has no manifest.json"
            return [Action(address, Verb.UPDATE, {"root": have["root"]}, after,
                           f"damaged: {what}; a new store for {want['embedder']} will be filled from the catalog",
                           requires=requires)]
        old = f"{manifest.get('embedder')}"
        if old != want["embedder"]:
            items = have.get("items")
            n = "all" if items is None else str(items)
            reason = f"embedder {old} -> {want['embedder']}: re-embed {n} items, rebuild index"
            done = have.get("reembedded")
            if done is not None:
                reason += f" (in progress: {done} of {n} embedded; the old index serves until then)"
            before = {"root": have["root"], "embedder": old, "dim": manifest.get("dim")}
            return [Action(address, Verb.UPDATE, before, after, reason, requires=requires)]
        return []

    def notes(self, observed: Mapping[str, Observed]) -> list[str]:
        return [f"{self.kind}.{name}: not re-embedding: {have['unavailable']}; "
                + (f"vectors/{have['serving']} keeps serving" if have.get("serving") else "nothing is indexed yet")
                for name, have in sorted(observed.items()) if have.get("unavailable")]

    async def apply(self, action: Action, ctx: Context) -> None:
        assert action.after is not None
        root = Path(action.after["root"])
        await state.require_proven(ctx, str(root))  # never a store on a bare mount point
        embedder, dim = str(action.after["embedder"]), int(action.after["dim"])
        target = layout.generation_dir(root, embedder)
        target.mkdir(parents=True, exist_ok=True)
        try:
            VectorStore.open(target, embedder=embedder, dim=dim).close()
        except EmbedderMismatch:
            raise
        except VectorStoreError as exc:
            if "open in another" not in str(exc):  # the search service holds it: it is there
                raise
        serving = layout.current_dir(root)
        manifest = layout.read_manifest(serving) if serving is not None else None
        if manifest is None or "error" in manifest:
            layout.set_current(root, embedder)  # nothing serves yet: the new store serves at once
