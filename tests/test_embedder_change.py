"""Changing harbor.yaml's embedder, end to end, and search by image through the service, with a real image embedder.

The whole daemon (every registered service) ingests real JPEGs from a watch folder with the default MiniLM
embedder; then harbor.yaml switches to ImageBind: `plan` says "re-embed N items, rebuild index", `apply` starts
it, the old index answers until every item is in the new one, then `vectors/current` swaps, the old generation and
its idmap rows go, and `bitharborctl search --image` finds photos by an example image.

ImageBind is Meta's real code and a real checkpoint file, at small widths but with the real output dimension
(1024), so its vectors fit an `imagebind-huge-<checkpoint fingerprint>@1024` store; the search service's embedder
factory (the seam the search tests use) builds it with that architecture instead of the huge one. Needs the
optional imagebind package (.venv-imagebind: `bash scripts/test.sh` runs this module there).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import io
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

if importlib.util.find_spec("imagebind") is None:
    pytest.skip("the optional imagebind-unofficial package is not installed here", allow_module_level=True)

from PIL import Image

from bitharborctl.cli import main as ctl
from bitharborctl.client import ApiError, Client
from bitharbord import log
from bitharbord.config import Embedding
from bitharbord.daemon import Daemon, Settings, registered
from bitharbord.embed.base import Embedder
from bitharbord.embed.imagebind import ImageBindEmbedder
from bitharbord.embed.minilm import MiniLMEmbedder
from bitharbord.index import layout
from bitharbord.search.service import SearchService
from tests.imagebind_tiny import TINY, save_tiny

ARCH = dict(TINY, out_embed_dim=1024)
MINILM = layout.EMBEDDERS["minilm"][0]
CONFIG = """apiVersion: bitharbor/v1
paths: {{media_root: /box/media, index_root: /box/index, config_root: /box/config}}
library:
  watch:
    - {{path: /box/inbox, type: personal}}
reconcile: {{interval: 1}}
index: {{rebuild_threshold: 4}}
{embedding}"""


def pattern(i: int) -> Image.Image:
    """Eight photos that look nothing alike: stripes, checkerboards, gradients and rings in other colours."""
    yy, xx = np.mgrid[0:240, 0:320].astype(np.float32)
    rng = np.random.default_rng(i)
    base = [np.sin(xx / (4 + 3 * i)), np.sin(yy / (5 + 2 * i)), ((xx // (8 + 4 * i) + yy // (8 + 4 * i)) % 2) * 2 - 1,
            np.sin(np.hypot(xx - 160, yy - 120) / (3 + i))][i % 4]
    colour = rng.uniform(40, 255, size=3)
    rgb = (0.5 + 0.5 * base)[..., None] * colour + rng.uniform(0, 30, size=(240, 320, 3))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


class Box:
    def __init__(self, state: Path, daemon: Daemon, task: asyncio.Task[int]) -> None:
        self.state, self.daemon, self.task = state, daemon, task
        self.root = state / "root" / "box"

    def ctl(self, *argv: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = ctl(["--socket", str(self.state / "bitharbord.sock"), *argv])
        return code, out.getvalue()

    async def actl(self, *argv: str) -> tuple[int, str]:
        return await asyncio.to_thread(self.ctl, *argv)

    async def api(self, method: str, path: str, **kw: Any) -> Any:
        client = Client(socket_path=str(self.state / "bitharbord.sock"), timeout=120)
        return await asyncio.to_thread(client.request, method, path, **kw)

    def sql(self, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        path = self.root / "media" / "bitharbor.db"
        if not path.exists():
            return []
        conn = sqlite3.connect(path, timeout=10)
        try:
            return [tuple(r) for r in conn.execute(query, args).fetchall()]
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()

    def live(self, embedder: str) -> int:
        rows = self.sql("SELECT count(*) FROM idmap WHERE embedder=? AND deleted=0", (embedder,))
        return int(rows[0][0]) if rows else 0


async def until(check: Callable[[], bool], what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running(state: Path, factory: Callable[[Embedding], Embedder]) -> AsyncIterator[Box]:
    services = [SearchService(embedder_factory=factory, poll_interval=0.2) if s.name == "search" else s
                for s in registered()]
    log.configure("info", json=False)  # the daemon's logs on stderr (structlog's default is stdout)
    daemon = Daemon(Settings.sandboxed(state, http=None), services=services)
    task = asyncio.create_task(daemon.run())
    try:
        await until(lambda: (state / "bitharbord.sock").exists(), "the socket", 60)
        yield Box(state, daemon, task)
    finally:
        daemon.stop.set()
        assert await asyncio.wait_for(task, 120) == 0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("imagebind") / "tiny-1024.pth"
    save_tiny(path, ARCH)
    return path


async def test_embedder_change_reembeds_while_the_old_index_serves_then_image_search(
        tmp_path: Path, checkpoint: Path) -> None:
    made: list[str] = []
    imagebind = ImageBindEmbedder(checkpoint, arch=ARCH, batch_size=4, num_threads=1)
    IMAGEBIND = layout.embedder_for(Embedding(backend="imagebind", checkpoint=str(checkpoint)))[0]
    assert imagebind.id == IMAGEBIND and IMAGEBIND.startswith("imagebind-huge-")  # named by the checkpoint

    def factory(cfg: Embedding) -> Embedder:
        made.append(cfg.backend)
        if cfg.backend == "imagebind":
            assert cfg.checkpoint == str(checkpoint)  # what harbor.yaml says, untouched by the sandbox
            return imagebind
        return MiniLMEmbedder()

    state = tmp_path / "state"
    state.mkdir()
    (state / "harbor.yaml").write_text(CONFIG.format(embedding=""))
    originals = tmp_path / "originals"
    originals.mkdir()
    photos = []
    for i in range(8):
        path = originals / f"photo_{i}.jpg"
        pattern(i).save(path, quality=92)
        photos.append(path)

    async with running(state, factory) as box:
        inbox = box.root / "inbox"
        await until(inbox.is_dir, "the watch folder")
        for p in photos:
            dest = inbox / p.name
            dest.write_bytes(p.read_bytes())
            old = time.time() - 300  # settled: not "still being written"
            os.utime(dest, (old, old))
        await until(lambda: box.live(MINILM) == 8, "8 photos embedded by minilm")
        code, out = await box.actl("search", "photo", "-o", "json")
        assert code == 0 and json.loads(out)["embedder"] == MINILM and len(json.loads(out)["results"]) == 8
        with pytest.raises(ApiError) as refused:  # a text-only embedder cannot take an image
            await box.api("POST", "/v1/search/image", data=photos[0].read_bytes(), content_type="image/jpeg")
        assert refused.value.status == 422 and refused.value.code == "unsupported_modality"

        # harbor.yaml now asks for ImageBind: the plan says what will happen before anything does
        new = tmp_path / "harbor-imagebind.yaml"
        new.write_text(CONFIG.format(embedding=f"embedding: {{backend: imagebind, checkpoint: {checkpoint}}}\n"))
        code, out = await box.actl("plan", "-f", str(new), "--detailed-exitcode")
        assert code == 2, out
        assert f"embedder {MINILM} -> {IMAGEBIND}: re-embed 8 items, rebuild index" in out
        assert "imagebind" not in made  # planning loads nothing
        serving = layout.current_dir(box.root / "index")
        assert serving is not None and serving.name == layout.slug(MINILM)

        # apply: the old index keeps answering while the new generation fills, then `current` swaps
        answered: list[str] = []

        async def keep_searching() -> None:
            while True:  # never an error while the re-embed runs
                answered.append((await box.api("GET", "/v1/search?q=photo"))["embedder"])
                await asyncio.sleep(0.05)

        searcher = asyncio.create_task(keep_searching())
        try:
            code, out = await box.actl("apply", "-f", str(new))
            assert code == 0, out
            await until(lambda: (layout.current_dir(box.root / "index") or Path()).name == layout.slug(IMAGEBIND),
                        "the swap to the imagebind generation")
        finally:
            searcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await searcher
        assert answered and answered[0] == MINILM and set(answered) <= {MINILM, IMAGEBIND}
        assert box.live(IMAGEBIND) == 8
        await until(lambda: box.live(MINILM) == 0 and not box.sql(
            "SELECT 1 FROM idmap WHERE embedder=?", (MINILM,)), "the old idmap rows dropped")
        await until(lambda: not (box.root / "index" / "vectors" / layout.slug(MINILM)).exists(),
                    "the old generation removed")
        code, out = await box.actl("plan", "-f", str(new), "--detailed-exitcode")
        assert code == 0, out  # converged
        code, out = await box.actl("index", "stats", "-o", "json")
        stats = json.loads(out)
        assert stats["embedder"] == IMAGEBIND and stats["dim"] == 1024 and stats["vectors"] == 8

        # search by an example image: each photo finds its own item first (the catalog holds its thumbnail)
        ids = {name: mid for mid, name in box.sql("SELECT id, file_name FROM media_core")}
        for p in photos[:4]:
            code, out = await box.actl("search", "--image", str(p), "-k", "3", "-o", "json")
            assert code == 0, out
            data = json.loads(out)
            assert data["embedder"] == IMAGEBIND and data["results"][0]["id"] == ids[p.name], data
        code, out = await box.actl("search", "sunset", "-o", "json")  # text goes through ImageBind's text tower
        assert code == 0 and json.loads(out)["embedder"] == IMAGEBIND and len(json.loads(out)["results"]) == 8
