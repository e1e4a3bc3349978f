"""Following ingest from bitharborctl: the jobs of `ingest --wait` until each is finished, and the queue of
`queue --watch` until it is empty, each drawn as progress (bitharborctl.progress) from what the daemon answers:

    GET /v1/ingest            the queue: depth, totals, the ETA of the stage that bounds it (eta_s, eta_bound_by)
    GET /v1/ingest/jobs/{id}  one job: its stage (done, failed and gone are finished)

Jobs are asked about in id order, at most UNFINISHED_ASKED unfinished ones a poll (a finished job is asked
about once), so following 10,000 files costs about 10,000 small requests, not 10,000 a poll; once the queue
is empty every job left is finished and is asked about at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from bitharborctl.client import Client
from bitharborctl.progress import Snapshot, View

FINISHED: Final = ("done", "failed", "gone")
UNFINISHED_ASKED: Final = 4
POLL_S: Final = 0.5


def queue_note(doc: dict[str, Any]) -> str:
    """What the queue says beside the numbers: paused and why, or the stage that bounds the ETA."""
    if doc.get("paused"):
        return f"paused: {doc['paused']}"
    bound = doc.get("eta_bound_by")
    if bound and doc.get("eta_s") is None:
        return f"{bound} finished nothing in the last minute"
    return f"bound by {bound}" if bound else ""


def cleared(doc: dict[str, Any]) -> int:
    """Jobs of the journal that are finished (every job minus the unfinished ones)."""
    totals = doc.get("totals") or {}
    return sum(int(n) for n in totals.values()) - int(doc.get("depth") or 0)


def jobs_snapshot(t: float, done: int, total: int, doc: dict[str, Any]) -> Snapshot:
    """`ingest --wait`: this command's jobs, finished of all; the queue's ETA and what bounds it."""
    eta = doc.get("eta_s")
    return Snapshot(t=t, label="ingest", step="ingest", done=done, total=total, unit="files",
                    eta=None if eta is None else float(eta), note=queue_note(doc))


def queue_snapshot(t: float, start: int, doc: dict[str, Any]) -> Snapshot:
    """`queue --watch`: the jobs finished since the watch began, of those and the unfinished ones; the daemon's
    rate over the last minute and the ETA of the stage that bounds it."""
    done = max(cleared(doc) - start, 0)
    eta = doc.get("eta_s")
    rate = float(doc.get("rate_per_s") or 0.0)
    return Snapshot(t=t, label="queue", step="queue", done=done, total=done + int(doc.get("depth") or 0),
                    unit="files", rate=rate or None, eta=None if eta is None else float(eta), note=queue_note(doc))


class JobFollower:
    """This command's jobs, by id, and which of them are finished."""

    def __init__(self, jobs: list[dict[str, Any]]) -> None:
        self.jobs = {int(j["id"]): j for j in jobs}
        self.order = list(dict.fromkeys(int(j["id"]) for j in jobs))  # a path given twice is one job
        self.open = [i for i in self.order if self.jobs[i].get("stage") not in FINISHED]

    @property
    def done(self) -> int:
        return len(self.order) - len(self.open)

    def poll(self, client: Client, *, queue_empty: bool) -> None:
        """Ask about the unfinished jobs in id order, up to UNFINISHED_ASKED still unfinished (all of them
        once the queue is empty)."""
        still: list[int] = []
        for n, job_id in enumerate(self.open):
            if len(still) >= UNFINISHED_ASKED and not queue_empty:
                still.extend(self.open[n:])
                break
            job = client.request("GET", f"/v1/ingest/jobs/{job_id}")["job"]
            self.jobs[job_id] = job
            if job.get("stage") not in FINISHED:
                still.append(job_id)
        self.open = still

    def result(self) -> list[dict[str, Any]]:
        return [dict(self.jobs[i], finished=i not in self.open) for i in self.order]


def follow_jobs(client: Client, jobs: list[dict[str, Any]], view: View, *,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> list[dict[str, Any]]:
    """Poll until every job is finished, drawing progress; the jobs as they ended ("finished": true)."""
    follower = JobFollower(jobs)
    total = len(follower.order)
    try:
        while True:
            doc = client.request("GET", "/v1/ingest?failures=0")
            empty = bool(doc.get("running")) and not doc.get("depth")
            follower.poll(client, queue_empty=empty)
            view.update(jobs_snapshot(clock(), follower.done, total, doc))
            if not follower.open:
                return follower.result()
            sleep(POLL_S)
    finally:
        view.close()


def watch_queue(client: Client, view: View, failures: int, *,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Poll GET /v1/ingest until the queue is empty (and ingest running), drawing progress; the last document."""
    start: int | None = None
    try:
        while True:
            doc: dict[str, Any] = client.request("GET", f"/v1/ingest?failures={failures}")
            if start is None:
                start = cleared(doc)
            view.update(queue_snapshot(clock(), start, doc))
            if doc.get("running") and not doc.get("depth"):
                return doc
            sleep(POLL_S)
    finally:
        view.close()
