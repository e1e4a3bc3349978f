"""A minimal real implementation of the ingest contract the catalog codes against (env.links.ingest):

    async def submit(path, *, media_type, origin, metadata=None) -> int      (a journal id)
    async def wait(job_id, timeout=None) -> JobResult(stage, media_id, error)

It stores the file through the real BlobStore and inserts a media_core row into the real SQLite file: what the
ingest pipeline does first, without probing, previews or embeddings. Used by the catalog tests until the ingest
service is wired into the daemon.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bitharbord.store.blobs import BlobError, BlobStore


@dataclass(frozen=True)
class JobResult:
    stage: str
    media_id: int | None
    error: str | None = None


@dataclass
class Submitted:
    path: Path
    media_type: str
    origin: str
    metadata: dict[str, Any]


@dataclass
class LocalIngest:
    media_root: Path
    db_path: Path
    fail_with: str | None = None  # every job fails with this error (an ingest failure case)
    submitted: list[Submitted] = field(default_factory=list)
    _results: dict[int, asyncio.Future[JobResult]] = field(default_factory=dict)

    async def submit(self, path: Path, *, media_type: str, origin: str,
                     metadata: Mapping[str, Any] | None = None) -> int:
        self.submitted.append(Submitted(Path(path), media_type, origin, dict(metadata or {})))
        job_id = len(self.submitted)
        future: asyncio.Future[JobResult] = asyncio.get_running_loop().create_future()
        self._results[job_id] = future
        try:
            future.set_result(await asyncio.to_thread(self._ingest, Path(path), media_type, dict(metadata or {})))
        except BlobError as exc:
            future.set_result(JobResult("failed", None, exc.reason))
        return job_id

    def _ingest(self, path: Path, media_type: str, metadata: dict[str, Any]) -> JobResult:
        if self.fail_with:
            return JobResult("failed", None, self.fail_with)
        stored = BlobStore(self.media_root).put(path, media_type)
        conn = sqlite3.connect(self.db_path)
        try:
            with conn:
                row = conn.execute("SELECT id FROM media_core WHERE file_hash=?", (stored.hexdigest,)).fetchone()
                if row:
                    return JobResult("done", int(row[0]))
                cur = conn.execute(
                    "INSERT INTO media_core(type, title, file_hash, blob_path, size) VALUES (?, ?, ?, ?, ?)",
                    (media_type, metadata.get("title"), stored.hexdigest, stored.relpath, stored.size))
                return JobResult("done", int(cur.lastrowid or 0))
        finally:
            conn.close()

    async def wait(self, job_id: int, timeout: float | None = None) -> JobResult:
        return await asyncio.wait_for(asyncio.shield(self._results[job_id]), timeout)

    def serves(self, db_path: str | Path) -> bool:
        """Never: this stand-in takes what the catalog submits, not the library's watched folders (the library
        provider leaves those jobs in SQLite, as it did for a stand-in without a library link)."""
        return False
