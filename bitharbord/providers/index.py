"""The index store on the index root: `vectors.fp32`, the ANN directory and a manifest naming the embedder."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from bitharbord.config import Harbor
from bitharbord.providers.base import Context, Observed, Spec
from bitharbord.reconcile.plan import Action, Verb
from bitharbord.system.atomic import write_atomic

EMBEDDER_DIMS = {"minilm": 384, "imagebind": 1024}
MANIFEST = "index.json"


def manifest_for(harbor: Harbor) -> dict[str, Any]:
    backend = harbor.embedding.backend
    return {"embedder": backend, "dim": EMBEDDER_DIMS[backend], "ann": harbor.index.backend}


class IndexStore:
    kind: ClassVar[str] = "index"

    def desired(self, harbor: Harbor) -> Mapping[str, Spec]:
        root = harbor.paths.index_root
        return {"store": {"root": root, **manifest_for(harbor), "requires": [f"dir.{root}"]}}

    async def observe(self, ctx: Context, desired: Mapping[str, Spec]) -> Mapping[str, Observed]:
        out: dict[str, Observed] = {}
        for name, spec in desired.items():
            root = Path(spec["root"])
            try:
                manifest = json.loads((root / MANIFEST).read_text())
            except FileNotFoundError:
                manifest = None
            except (OSError, ValueError) as exc:
                manifest = {"error": f"unreadable manifest: {exc}"}
            vectors = root / "vectors.fp32"
            if manifest is None and not vectors.exists():
                continue
            out[name] = {
                "root": str(root),
                "manifest": manifest,
                "vectors_bytes": vectors.stat().st_size if vectors.exists() else None,
                "ann_dir": (root / "ann").is_dir(),
            }
        return out

    def diff(self, name: str, want: Spec | None, have: Observed | None) -> list[Action]:
        if want is None:
            return []
        address = f"{self.kind}.{name}"
        after = {k: want[k] for k in ("root", "embedder", "dim", "ann")}
        requires = tuple(want.get("requires", ()))
        if have is None:
            return [Action(address, Verb.CREATE, None, after,
                           "missing: vectors.fp32, ann/ and index.json", requires=requires)]
        manifest = have.get("manifest") or {}
        missing = [part for part, ok in (("vectors.fp32", have.get("vectors_bytes") is not None),
                                         ("ann/", have.get("ann_dir")), ("index.json", bool(manifest)))
                   if not ok]
        if missing:
            return [Action(address, Verb.UPDATE, {"root": have["root"]}, after,
                           "missing: " + ", ".join(missing), requires=requires)]
        return []

    async def apply(self, action: Action, ctx: Context) -> None:
        assert action.after is not None
        root = Path(action.after["root"])
        (root / "ann").mkdir(exist_ok=True)
        vectors = root / "vectors.fp32"
        if not vectors.exists():
            fd = os.open(vectors, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            os.fsync(fd)
            os.close(fd)
        if not (root / MANIFEST).exists():
            manifest = {k: action.after[k] for k in ("embedder", "dim", "ann")} | {"rows": 0}
            write_atomic(root / MANIFEST, json.dumps(manifest, indent=2).encode())
