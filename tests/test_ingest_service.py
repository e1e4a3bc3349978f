"""The ingest service inside a real daemon (in process): the catalog contract, the routes over the Unix socket, the
streaming upload, status, conditions and metrics, and the pause when the media storage is not ready."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bitharborctl.client import ApiError, Client
from bitharborctl.commands.ingest import upload_file
from bitharbord.daemon import Daemon, Settings
from bitharbord.ingest.errors import IngestRefused
from bitharbord.ingest.service import IngestService
from bitharbord.store.blobs import stored_digests
from tests.media import make_jpeg, make_video, random_file

CONFIG = """apiVersion: bitharbor/v1
paths: {media_root: /box/media, index_root: /box/index, config_root: /box/config}
library:
  watch:
    - {path: /box/inbox, type: personal}
reconcile: {interval: 1}
"""


@dataclass
class Running:
    daemon: Daemon
    service: IngestService
    state: Path
    task: asyncio.Task[int]

    @property
    def root(self) -> Path:
        return self.state / "root" / "box"

    @property
    def client(self) -> Client:
        return Client(socket_path=str(self.state / "bitharbord.sock"), timeout=120)

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return await asyncio.to_thread(self.client.request, method, path, body)

    def sql(self, query: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.root / "media" / "bitharbor.db")
        try:
            return [tuple(r) for r in conn.execute(query).fetchall()]
        finally:
            conn.close()


def raw_put(client: Client, path: str, body: bytes) -> tuple[int, Any]:
    conn = client._connection()
    try:
        conn.request("PUT", path, body=body, headers={"Content-Type": "application/octet-stream"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


async def until(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def start(tmp_path: Path, service: IngestService) -> Running:
    state = tmp_path / "state"
    state.mkdir()
    # files under tmp_path/camera may be ingested from the server (library.import_roots)
    (state / "harbor.yaml").write_text(CONFIG.replace("reconcile:", f"  import_roots: [{tmp_path / 'camera'}]\n"
                                                                    "reconcile:"))
    daemon = Daemon(Settings.sandboxed(state, http=None), services=[service])
    task = asyncio.create_task(daemon.run())
    running = Running(daemon, service, state, task)
    await until(lambda: (state / "bitharbord.sock").exists() and service.session is not None)
    return running


@pytest.fixture
async def harbor(tmp_path: Path) -> AsyncIterator[Running]:
    running = await start(tmp_path, IngestService(max_upload_bytes=1 << 20))
    yield running
    running.daemon.stop.set()
    assert await asyncio.wait_for(running.task, 60) == 0


async def test_catalog_contract_submit_and_wait(harbor: Running, tmp_path: Path) -> None:
    ingest = harbor.daemon.env.links.ingest
    assert ingest is harbor.service
    film = make_video(harbor.root / "media" / ".incoming" / "nosferatu" / "Nosferatu.mp4", seconds=1, audio=False)
    meta = {"title": "Nosferatu", "tmdb_id": 653, "year": 1922, "cast": ["Max Schreck"], "genres": ["Horror"]}
    job_id = await ingest.submit(film, media_type="movie", origin="catalog", metadata=meta)
    assert await ingest.submit(film, media_type="movie", origin="catalog", metadata=meta) == job_id
    result = await ingest.wait(job_id, timeout=60)
    assert result.finished and result.stage == "done" and result.error is None and not result.duplicate
    assert harbor.sql("SELECT id, title, type FROM media_core") == [(result.media_id, "Nosferatu", "movie")]
    assert harbor.sql("SELECT tmdb_id, year, cast_json FROM movies") == [(653, 1922, '["Max Schreck"]')]
    assert film.exists()  # the catalog's download is left for the catalog to remove
    assert (await ingest.submit(film, media_type="movie", origin="catalog")) == job_id  # done: same id
    with pytest.raises(IngestRefused, match="no such file or directory"):
        await ingest.submit(tmp_path / "missing.mp4", media_type="movie", origin="catalog")
    with pytest.raises(IngestRefused, match="media type 'film' is not one of personal"):
        await ingest.submit(film, media_type="film", origin="catalog")
    with pytest.raises(IngestRefused, match="origin 'web' is not one of watch, local, upload, catalog"):
        await ingest.submit(film, media_type="movie", origin="web")


async def test_local_route_adds_a_folder_and_refuses_bad_input_whole(harbor: Running, tmp_path: Path) -> None:
    outside = tmp_path / "camera"
    files = [make_jpeg(outside / f"DSC{i}.jpg", color=(i, 2, 3)) for i in range(3)]
    (outside / ".hidden.jpg").write_bytes(b"x")
    with pytest.raises(ApiError) as err:
        await harbor.call("POST", "/v1/ingest/local", {"paths": [str(outside), str(outside / "nope.jpg")],
                                                       "type": "personal"})
    assert err.value.status == 400 and err.value.message == f"{outside / 'nope.jpg'}: no such file or directory"
    assert harbor.sql("SELECT count(*) FROM ingest_jobs") == [(0,)]  # nothing queued for the good path either
    with pytest.raises(ApiError, match="not in a watch folder, so give its type"):
        await harbor.call("POST", "/v1/ingest/local", {"paths": [str(outside)]})
    with pytest.raises(ApiError, match="inside BitHarbor's own storage"):
        await harbor.call("POST", "/v1/ingest/local", {"paths": [str(harbor.root / "media")], "type": "other"})
    with pytest.raises(ApiError, match="expected an absolute path"):
        await harbor.call("POST", "/v1/ingest/local", {"paths": ["camera"], "type": "other"})
    for system in ("/", "/proc/self", "/dev"):
        with pytest.raises(ApiError, match="a system directory; give the folder that holds the media"):
            await harbor.call("POST", "/v1/ingest/local", {"paths": [system], "type": "other"})
    with pytest.raises(ApiError, match="invalid body: type: Input should be"):
        await harbor.call("POST", "/v1/ingest/local", {"paths": [str(outside)], "type": "film"})
    data = await harbor.call("POST", "/v1/ingest/local", {"paths": [str(outside)], "type": "personal", "wait": True})
    assert sorted(j["path"] for j in data["jobs"]) == sorted(str(f) for f in files)
    assert {j["stage"] for j in data["jobs"]} == {"done"} and all(j["finished"] for j in data["jobs"])
    job = await harbor.call("GET", f"/v1/ingest/jobs/{data['jobs'][0]['id']}")
    assert job["job"]["origin"] == "local" and job["job"]["media_id"] is not None


async def test_streaming_upload(harbor: Running, tmp_path: Path) -> None:
    photo = make_jpeg(tmp_path / "from-laptop" / "beach.jpg", size=(400, 300))
    data = await asyncio.to_thread(upload_file, harbor.client, photo, "personal", wait=True)
    assert data["size"] == photo.stat().st_size
    job = data["job"]
    assert job["stage"] == "done" and job["origin"] == "upload"
    assert harbor.sql("SELECT file_name, type FROM media_core") == [("beach.jpg", "personal")]
    staging = harbor.root / "media" / ".incoming" / "uploads"
    assert [p for p in staging.rglob("*") if p.is_file()] == []  # the staged copy is gone once stored
    assert harbor.sql("SELECT count(*) FROM sources") == [(0,)]  # an upload adds no path
    # the same again: a duplicate, not a second item
    again = await asyncio.to_thread(upload_file, harbor.client, photo, "personal", wait=True)
    assert again["job"]["duplicate"] and again["job"]["media_id"] == job["media_id"]

    big = random_file(tmp_path / "big.bin", (1 << 20) + 1)
    with pytest.raises(ApiError) as err:
        await asyncio.to_thread(upload_file, harbor.client, big, "other", wait=False)
    assert err.value.status == 413 and "the limit is 1048576" in err.value.message
    with pytest.raises(ApiError, match="invalid query: type: Input should be 'personal', 'movie'"):
        await asyncio.to_thread(upload_file, harbor.client, photo, "film", wait=False)
    status, answer = await asyncio.to_thread(raw_put, harbor.client, "/v1/uploads?name=..&type=other", b"x")
    assert status == 400 and "name must be a file name" in answer["error"]["message"]
    assert [p for p in staging.rglob("*") if p.is_file()] == []
    assert harbor.sql("SELECT count(*) FROM media_core") == [(1,)]


async def test_status_conditions_and_metrics(harbor: Running, tmp_path: Path) -> None:
    inbox = harbor.root / "inbox"
    good = make_jpeg(inbox / "good.jpg")
    bad = inbox / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    for p in (good, bad):
        old = time.time() - 60
        import os

        os.utime(p, (old, old))
    harbor.daemon.loop.wake.set()
    await until(lambda: harbor.sql("SELECT count(*) FROM ingest_jobs WHERE stage IN ('done', 'failed')") == [(2,)])
    await asyncio.sleep(1.2)  # one status tick
    st = await harbor.call("GET", "/v1/ingest")
    assert st["depth"] == 0 and st["totals"] == {"done": 1, "failed": 1} and st["pending_embed"] == 1
    assert st["failures"] == [{"id": st["failures"][0]["id"], "path": str(bad), "error": (
        "cannot probe the file: not an image Pillow can read (unknown format or corrupt)"), "at": pytest.approx(
        time.time(), abs=60)}]
    status = await harbor.call("GET", "/v1/status")
    assert status["services"]["ingest"]["failed_last_10_minutes"] == 1
    failing = next(c for c in status["conditions"] if c["type"] == "IngestFailing")
    assert failing["status"] is True and str(bad) in failing["reason"] and "not an image" in failing["reason"]
    metrics = harbor.daemon.metrics.scrape().decode()
    assert 'bitharbor_ingest_files_total{result="ingested"} 1.0' in metrics
    assert 'bitharbor_ingest_files_total{result="failed"} 1.0' in metrics
    assert f'bitharbor_ingest_bytes_total{{result="ingested"}} {float(good.stat().st_size)}' in metrics
    assert 'bitharbor_ingest_stage_duration_seconds_count{stage="hash"} 2.0' in metrics
    assert 'bitharbor_ingest_stage_duration_seconds_count{stage="preview"} 1.0' in metrics
    assert "bitharbor_ingest_queue_depth 0.0" in metrics
    # fixed by the owner, then retried
    make_jpeg(bad, color=(5, 5, 5))
    retried = await harbor.call("POST", "/v1/ingest/retry", {})
    assert retried == {"queued": [st["failures"][0]["id"]], "embed_requeued": 0}  # no embedding row ran out
    await until(lambda: harbor.sql("SELECT count(*) FROM media_core") == [(2,)])


async def test_paused_while_media_storage_is_not_ready(tmp_path: Path) -> None:
    ready = {"ok": False}

    def media_ready() -> tuple[bool, str]:
        return ready["ok"], "ok" if ready["ok"] else "pool tank is not mounted at /srv/tank"

    state = tmp_path / "state"
    inbox = state / "root" / "box" / "inbox"
    photo = make_jpeg(inbox / "a.jpg")
    old = time.time() - 60
    import os

    os.utime(photo, (old, old))
    service = IngestService()
    state.mkdir(exist_ok=True)
    # files under tmp_path/camera may be ingested from the server (library.import_roots)
    (state / "harbor.yaml").write_text(CONFIG.replace("reconcile:", f"  import_roots: [{tmp_path / 'camera'}]\n"
                                                                    "reconcile:"))
    daemon = Daemon(Settings.sandboxed(state, http=None), services=[service])
    daemon.env.links.media_ready = media_ready
    task = asyncio.create_task(daemon.run())
    try:
        await until(lambda: (state / "root" / "box" / "media" / "bitharbor.db").exists())
        await asyncio.sleep(2.5)
        assert service.session is None
        assert service.paused == "media storage not ready: pool tank is not mounted at /srv/tank"
        paused = next(c for c in service.conditions() if c.type == "IngestPaused")
        assert paused.status and "pool tank is not mounted" in paused.reason
        assert stored_digests(state / "root" / "box" / "media") == {}
        conn = sqlite3.connect(state / "root" / "box" / "media" / "bitharbor.db")
        assert conn.execute("SELECT count(*) FROM ingest_jobs").fetchone() == (0,)  # not even planned
        conn.close()
        ready["ok"] = True
        daemon.loop.wake.set()
        await until(lambda: service.session is not None and len(stored_digests(state / "root" / "box" / "media")) == 1)
        assert not service.paused
    finally:
        daemon.stop.set()
        assert await asyncio.wait_for(task, 60) == 0


def test_status_json_is_serialisable() -> None:
    service = IngestService()
    st = json.loads(json.dumps(service.status()))
    assert st["running"] is False and st["paused"] is None and st["summary"] == "starting"
    assert [c.type for c in service.conditions()] == ["IngestFailing", "IngestPaused"]
