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
weights at the same path are another embedder: re-embedded, never mixed into the old store. `desired` only names
the checkpoint (it reads nothing); `observe` reads the fingerprint and checks the checkpoint can load."""

from __future__ import annotations

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
from bitharbord.store.db import DB_NAME
from bitharbord.store.index_counts import reembed_progress


def wanted_embedder(spec: Spec) -> tuple[str | None, str | None]:
    """(embedder id, None) of the store `spec` asks for, or (None, why it cannot be used here). Reads the
    checkpoint where the id depends on it (imagebind: 4 MiB for its fingerprint): observe's work, never desired's."""
    if spec.get("embedder"):
        return str(spec["embedder"]), None
    try:
        embedder, _ = layout.resolve_embedder(str(spec["backend"]), spec.get("checkpoint"))
    except layout.EmbedderUnavailable as exc:
        return None, str(exc)
    return embedder, None


class IndexStore:
    kind: ClassVar[str] = "index"

    def desired(self, harbor: Harbor) -> Mapping[str, Spec]:
        """Pure: the store harbor.yaml names. `embedder` is None where its id depends on the weights' content
        (imagebind: the checkpoint's fingerprint); observe reads it (`target` in the observed state)."""
        root = harbor.paths.index_root
        embedder, dim = layout.named_embedder(harbor.embedding)
        return {"store": {"root": root, "backend": harbor.embedding.backend,
                          "checkpoint": harbor.embedding.checkpoint, "embedder": embedder, "dim": dim,
                          "ann": harbor.index.backend, "db": str(Path(harbor.paths.media_root) / DB_NAME),
                          "requires": [f"dir.{root}"]}}

    async def observe(self, ctx: Context, desired: Mapping[str, Spec]) -> Mapping[str, Observed]:
        out: dict[str, Observed] = {}
        for name, spec in desired.items():
            root = Path(spec["root"])
            why = await state.blocked(ctx, str(root))
            if why:  # the pool under index_root is missing: nothing is planned (dir.<index_root> notes why)
                out[name] = {"root": str(root), "blocked": why}
                continue
            serving = layout.current_dir(root)
            embedder, unavailable = wanted_embedder(spec)
            search = ctx.links.search
            if not unavailable and embedder and search is not None:
                unavailable = search.load_failure(embedder)  # it failed to load in the daemon
            if unavailable or embedder is None:  # nothing to plan; notes() says why
                out[name] = {"root": str(root), "serving": serving.name if serving else None,
                             "unavailable": unavailable}
                continue
            # the id desired could not know (it depends on the checkpoint's content)
            target: dict[str, Any] = {} if embedder == spec.get("embedder") else {"target": embedder}
            if serving is None:
                if target:
                    out[name] = target
                continue
            manifest = layout.read_manifest(serving)
            generation = layout.generation_dir(root, embedder)
            have: dict[str, Any] = {"root": str(root), "serving": serving.name, "manifest": manifest, **target}
            if manifest is not None and manifest.get("embedder") != embedder:
                items, done = reembed_progress(Path(spec["db"]), embedder)
                have.update(items=items, reembedded=done if generation.is_dir() else None)
            out[name] = have
        return out

    def diff(self, name: str, want: Spec | None, have: Observed | None) -> list[Action]:
        if have is not None and have.get("blocked"):
            return []  # its pool is missing: nothing on the bare mount point
        if want is None or (have is not None and have.get("unavailable")):
            return []
        embedder = (have or {}).get("target") or want.get("embedder")
        if not embedder:  # observe did not resolve it (it says why when it cannot)
            return []
        address = f"{self.kind}.{name}"
        after = {"root": want["root"], "embedder": embedder, "dim": want["dim"], "ann": want["ann"]}
        requires = tuple(want.get("requires", ()))
        if have is None or "serving" not in have:
            return [Action(address, Verb.CREATE, None, after,
                           f"missing: the vector store for {embedder} (vectors/{layout.slug(embedder)})",
                           requires=requires)]
        manifest = have.get("manifest")
        if not manifest or "error" in manifest:
            what = manifest["error"] if manifest else f"vectors/{have.get('serving')} has no manifest.json"
            return [Action(address, Verb.UPDATE, {"root": have["root"]}, after,
                           f"damaged: {what}; a new store for {embedder} will be filled from the catalog",
                           requires=requires)]
        old = f"{manifest.get('embedder')}"
        if old != embedder:
            items = have.get("items")
            n = "all" if items is None else str(items)
            reason = f"embedder {old} -> {embedder}: re-embed {n} items, rebuild index"
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
