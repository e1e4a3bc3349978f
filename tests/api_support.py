"""Shared set-up of the API, OpenAPI and web UI tests: a real sandboxed Daemon with harbor.yaml applied (admins,
machine token), and real catalog rows pointing at real files (a video blob, a JPEG thumbnail)."""

from __future__ import annotations

import io
import os
import socket
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from PIL import Image

from bitharbord.daemon import Daemon, Settings
from bitharbord.store import db
from tests.conftest import harbor_text

ALICE_PASSWORD = "correct horse battery staple"  # harbor.yaml password_hash
BOB_PASSWORD = "bob's long secret"  # harbor.yaml password_file
MACHINE_TOKEN = "machine-token-0123456789"
VIDEO_BYTES = bytes(range(256)) * 40  # 10,240 bytes with a recognisable pattern for Range checks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Box:
    daemon: Daemon
    tmp: Path
    media_root: Path
    index_root: Path
    config_root: Path
    media: dict[str, int]  # name -> media id


def config_text(tmp: Path, extra: str = "", catalog: str = "") -> str:
    hashed = PasswordHasher().hash(ALICE_PASSWORD)
    (tmp / "bob.password").write_text(BOB_PASSWORD + "\n")
    (tmp / "machine.token").write_text(MACHINE_TOKEN + "\n")
    return harbor_text(Path("/box"), (
        "server:\n"
        "  http:\n"
        f"    token_file: {tmp / 'machine.token'}\n"
        f"{extra}"
        "admins:\n"
        f"  - {{name: alice, password_hash: '{hashed}'}}\n"
        f"  - {{name: bob, password_file: {tmp / 'bob.password'}}}\n"
        f"{catalog}"
    ))


async def make_box(tmp: Path, *, extra_http: str = "", services: list[Any] | None = None,
                   http: str | None = None) -> Box:
    """A sandboxed daemon (not running its loop) with harbor.yaml applied: dirs, database, admins."""
    daemon = Daemon(Settings.sandboxed(tmp / "state", http=http), services=services)
    desired = daemon.desired_from(config_text(tmp, extra_http), str(tmp / "harbor.yaml"))
    _, report = await daemon.apply(desired, None, allow_destroy=False)
    assert report.ok, report.to_dict()
    paths = daemon.current_desired().effective.paths  # type: ignore[union-attr]
    box = Box(daemon, tmp, Path(paths.media_root), Path(paths.index_root), Path(paths.config_root), {})
    box.media = add_media(box.media_root, box.index_root, tmp)
    return box


def _jpeg(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(out, "JPEG")
    return out.getvalue()


def add_media(media_root: Path, index_root: Path, tmp: Path) -> dict[str, int]:
    """Rows the way ingest writes them: blob and previews relative to their roots; only existing columns."""
    h1 = "a1" + "0" * 62
    h2 = "b2" + "0" * 62
    blob = media_root / "personal" / h1[:2] / f"{h1}.mp4"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(VIDEO_BYTES)
    photo = media_root / "personal" / h2[:2] / f"{h2}.jpg"
    photo.parent.mkdir(parents=True, exist_ok=True)
    photo.write_bytes(_jpeg((200, 60, 40)))
    thumb = index_root / "previews" / h1[:2] / f"{h1}.jpg"
    thumb.parent.mkdir(parents=True, exist_ok=True)
    thumb.write_bytes(_jpeg((30, 90, 200)))
    outside = tmp / "secret.txt"
    outside.write_text("not media")
    rows: dict[str, dict[str, Any]] = {
        "video": {"type": "personal", "title": "Harbour at dusk", "file_hash": h1,
                  "blob_path": os.path.relpath(blob, media_root), "size": len(VIDEO_BYTES), "mime": "video/mp4",
                  "kind": "video", "file_name": "dusk.mp4", "duration_s": 2.0, "width": 64, "height": 48,
                  "thumbnail": os.path.relpath(thumb, index_root), "metadata_json": '{"codec": "h264"}'},
        "photo": {"type": "personal", "title": "Red boat", "file_hash": h2, "blob_path": str(photo),
                  "size": photo.stat().st_size, "mime": "image/jpeg", "kind": "image", "file_name": "boat.jpg"},
        "escape": {"type": "other", "title": "Escapes its root", "file_hash": "c3" + "0" * 62,
                   "blob_path": f"../../../../../../..{outside}", "thumbnail": "/etc/passwd", "kind": "other"},
        "absent": {"type": "movie", "title": "Not on disk", "file_hash": "d4" + "0" * 62,
                   "blob_path": "movie/d4/missing.mkv", "kind": "video"},
    }
    path = media_root / db.DB_NAME
    conn = sqlite3.connect(path)
    try:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(media_core)")}
        ids = {}
        for name, row in rows.items():
            row = {k: v for k, v in row.items() if k in columns}
            cur = conn.execute(f"INSERT INTO media_core ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                               list(row.values()))
            ids[name] = int(cur.lastrowid or 0)
        conn.execute("INSERT INTO personal_media (media_id, camera, width, height) VALUES (?, 'Pixel', 64, 48)",
                     (ids["video"],))
        conn.commit()
    finally:
        conn.close()
    return ids


# ----------------------------------------------------------------------------- a live daemon (subprocess)


class Fakes:
    """The Internet Archive and TMDB as local aiohttp servers, on a loop in a background thread (the tests that
    use a live daemon are synchronous: schemathesis and selenium block)."""

    def __init__(self) -> None:
        import asyncio
        import threading

        from aiohttp import web

        from tests.fakes.archive import FakeArchive
        from tests.fakes.tmdb import FakeTmdb
        from tests.test_archive import nosferatu_items

        self.loop = asyncio.new_event_loop()
        self.archive = FakeArchive()
        for item in nosferatu_items():
            self.archive.add(item)
        self.tmdb = FakeTmdb(api_key=TMDB_KEY)
        self.urls: dict[str, str] = {}
        self._runners: list[web.AppRunner] = []
        ready = threading.Event()

        async def start() -> None:
            for name, app in (("archive", self.archive.app), ("tmdb", self.tmdb.app)):
                runner = web.AppRunner(app, access_log=None)
                await runner.setup()
                port = free_port()
                await web.TCPSite(runner, "127.0.0.1", port).start()
                self._runners.append(runner)
                self.urls[name] = f"http://127.0.0.1:{port}"

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, name="fakes", daemon=True)
        self.thread.start()
        assert ready.wait(30), "the fake upstream servers did not start"

    def catalog_yaml(self, key_file: Path) -> str:
        return ("catalog:\n"
                "  tmdb:\n"
                f"    key_file: {key_file}\n"
                f"    api_base: {self.urls['tmdb']}/3\n"
                f"    image_base: {self.urls['tmdb']}\n"
                "  archive:\n"
                f"    host: {self.urls['archive']}\n")

    def stop(self) -> None:
        import asyncio

        async def cleanup() -> None:
            for runner in self._runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


TMDB_KEY = "0123456789abcdef0123456789abcdef"


@dataclass
class Live:
    """bitharbord as a process (tests/test_e2e.Harbord), harbor.yaml applied, media rows in its catalog."""

    harbord: Any
    fakes: Fakes
    tmp: Path
    media_root: Path
    index_root: Path
    media: dict[str, int]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.harbord.port}"

    def token(self, name: str = "alice", password: str = ALICE_PASSWORD) -> str:
        import json
        import urllib.request

        req = urllib.request.Request(f"{self.url}/v1/auth/login", method="POST",
                                     data=json.dumps({"name": name, "password": password}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return str(json.loads(resp.read())["token"])

    def stop(self) -> None:
        try:
            self.harbord.stop()
        finally:
            self.fakes.stop()


def start_live(tmp: Path, *, rows: bool = True) -> Live:
    """Fakes up, bitharbord started, harbor.yaml applied through bitharborctl; `rows`: add_media's catalog rows."""
    from tests.test_e2e import Harbord

    fakes = Fakes()
    try:
        key_file = tmp / "tmdb.key"
        key_file.write_text(TMDB_KEY + "\n")
        cfg = tmp / "harbor.yaml"
        cfg.write_text(config_text(tmp, catalog=fakes.catalog_yaml(key_file)))
        harbord = Harbord(tmp).start()
    except BaseException:
        fakes.stop()
        raise
    try:
        applied = harbord.ctl("apply", "-f", str(cfg))
        assert applied.returncode == 0, applied.stdout + applied.stderr
        root = harbord.state / "root" / "box"
        media = add_media(root / "media", root / "index", tmp) if rows else {}
        live = Live(harbord, fakes, tmp, root / "media", root / "index", media)
        wait_until_services_answer(live)
    except BaseException:
        harbord.stop()
        fakes.stop()
        raise
    return live


def wait_until_services_answer(live: Live, timeout: float = 180.0) -> None:
    """Services start in the background (a model loads, a store opens): wait until no GET route without
    parameters answers 503, so tests see the daemon as a person would once it has settled."""
    import json
    import time
    import urllib.error
    import urllib.request

    def get(path: str) -> tuple[int, bytes]:
        req = urllib.request.Request(f"{live.url}{path}", headers={"Authorization": f"Bearer {MACHINE_TOKEN}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    doc = json.loads(get("/v1/openapi.json")[1])
    probes = []
    for path, ops in doc["paths"].items():
        op = ops.get("get")
        if op is None or "{" in path or path == "/v1/openapi.json":
            continue
        required = [p["name"] for p in op.get("parameters", []) if p.get("required")]
        if required == ["q"]:
            probes.append(f"{path}?q=harbour")
        elif not required:
            probes.append(path)
    deadline = time.monotonic() + timeout
    waiting = probes
    while waiting and time.monotonic() < deadline:
        waiting = [p for p in waiting if get(p)[0] == 503]
        if waiting:
            time.sleep(0.5)
    assert not waiting, f"still answering 503 after {timeout:.0f}s: {waiting}"
