"""Ingest: add files already on the server, upload files from here, and look at the ingest queue.

    bitharborctl ingest PATH... [--type T] [--wait]      POST /v1/ingest/local (paths on the server)
    bitharborctl upload FILE... --type T [--no-wait]     PUT /v1/uploads (the file streamed as the body)
    bitharborctl queue [--failures N] [--retry-failed] [--watch]   GET /v1/ingest (queue, rate, ETA, failures)

`ingest --wait`, `upload` and `queue --watch` draw progress on stderr (bitharborctl.progress: a bar with rate
and ETA on a terminal, one line per step in a pipe); stdout has what they printed before: the jobs, the report.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bitharborctl.client import ApiError, Client, ClientError
from bitharborctl.follow import follow_jobs, watch_queue
from bitharborctl.output import add_output_flag, dump_json, emit
from bitharborctl.progress import Snapshot, View, open_view
from bitharbord.reconcile.render import human_duration

TYPES = ("personal", "movie", "tv", "music", "podcast", "online_video", "other")


def _client(args: argparse.Namespace) -> Client:
    from bitharborctl.cli import client_for

    return client_for(args)


def _view(args: argparse.Namespace) -> View:
    return open_view(sys.stderr, no_color=getattr(args, "no_color", False))


def _job_line(job: dict[str, Any]) -> str:
    stage = job.get("stage", "?")
    path = str(job.get("path") or "")
    shown = f"upload {os.path.basename(path)}" if job.get("origin") == "upload" else path
    line = f"  {stage:<9} #{job.get('id')} {shown}"
    if job.get("media_id") is not None:
        line += f" -> item {job['media_id']}" + (" (already in the library)" if job.get("duplicate") else "")
    if job.get("error"):
        line += f": {job['error']}"
    elif job.get("warning"):
        line += f" ({job['warning']})"
    return line


# ---------------------------------------------------------------------------- ingest PATH...


def cmd_ingest(args: argparse.Namespace) -> int:
    paths = [os.path.abspath(p) for p in args.paths]
    body: dict[str, Any] = {"paths": paths, "wait": False}
    if args.type:
        body["type"] = args.type
    client = _client(args)
    data = client.request("POST", "/v1/ingest/local", body)
    jobs = data.get("jobs", [])
    if args.wait:  # followed from here, drawn as progress, rather than one long request
        jobs = follow_jobs(client, jobs, _view(args))
        data = {"jobs": jobs}
    if args.output == "json":
        dump_json(data)
    else:
        print(f"queued {len(jobs)} file(s)" if not args.wait else f"ingested {len(jobs)} file(s)")
        for job in jobs:
            print(_job_line(job))
    return 1 if any(j.get("stage") == "failed" for j in jobs) else 0


# ---------------------------------------------------------------------------- upload FILE...


class _Counted:
    """A file read for the request body that tells `sent` how many bytes each read took."""

    def __init__(self, handle: Any, sent: Callable[[int], None]) -> None:
        self.handle = handle
        self.sent = sent

    def read(self, n: int = -1, /) -> bytes:
        chunk: bytes = self.handle.read(n)
        self.sent(len(chunk))
        return chunk


def upload_file(client: Client, path: Path, media_type: str, *, wait: bool,
                sent: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Stream one file as the body of PUT /v1/uploads (`sent` told the bytes of each chunk read for it);
    returns the JSON answer."""
    try:
        size = path.stat().st_size
        handle = path.open("rb")
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror or exc}") from None
    query = urlencode({"name": path.name, "type": media_type, "wait": "1" if wait else "0"})
    try:
        with handle:
            body = handle if sent is None else _Counted(handle, sent)
            data = client.request("PUT", f"/v1/uploads?{query}", data=body, size=size)
    except ApiError as exc:
        raise ApiError(exc.status, exc.code, f"{path}: {exc.message}", exc.body) from None
    except ClientError as exc:
        raise ClientError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ClientError(f"{path}: unexpected answer: {str(data)[:200]!r}")
    return data


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # upload_file says why it cannot be read


class _UploadProgress:
    """Snapshots of an upload: the bytes sent of every file's, and while the daemon ingests a file, that step."""

    def __init__(self, view: View, paths: list[Path], wait: bool) -> None:
        self.view, self.paths, self.wait = view, paths, wait
        self.sizes = [_size(p) for p in paths]
        self.total = sum(self.sizes)
        self.before = 0  # bytes of the files already sent
        self.index = 0
        self.file_sent = 0

    def start(self, index: int) -> None:
        self.index, self.file_sent = index, 0
        self.before = sum(self.sizes[:index])
        self._show("send")

    def sent(self, n: int) -> None:
        self.file_sent += n
        done = self.file_sent >= self.sizes[self.index]
        self._show("ingest" if done and self.wait else "send")

    def _show(self, what: str) -> None:
        name = self.paths[self.index].name
        label = f"upload [{self.index + 1}/{len(self.paths)}] {name}" + (": ingesting" if what == "ingest" else "")
        self.view.update(Snapshot(t=time.monotonic(), label=label, step=f"{what} {self.index}",
                                  done=self.before + self.file_sent, total=self.total or None, unit="B"))


def cmd_upload(args: argparse.Namespace) -> int:
    client = _client(args)
    results = []
    paths = [Path(name) for name in args.files]
    view = _view(args)
    progress = _UploadProgress(view, paths, wait=not args.no_wait)
    lines: list[str] = []
    try:
        for index, path in enumerate(paths):
            progress.start(index)
            data = upload_file(client, path, args.type, wait=not args.no_wait, sent=progress.sent)
            results.append(data)
            lines += [f"{path}: {data.get('size', 0)} bytes sent", _job_line(data.get("job", {}))]
    finally:
        view.close()  # then the lines, so they do not run through a bar being drawn
        if args.output != "json" and lines:
            print("\n".join(lines))
    if args.output == "json":
        dump_json({"uploads": results})
    return 1 if any(r.get("job", {}).get("stage") == "failed" for r in results) else 0


# ---------------------------------------------------------------------------- queue


def render_queue(st: dict[str, Any]) -> str:
    lines: list[str] = []
    if st.get("paused"):
        lines.append(f"paused:    {st['paused']}")
    if st.get("worker_error"):
        lines.append(f"error:     {st['worker_error']}")
    queue = st.get("queue") or {}
    depth = st.get("depth", 0)
    parts = ", ".join(f"{n} {stage}" for stage, n in queue.items() if n)
    lines.append(f"queue:     {depth} unfinished" + (f" ({parts})" if parts else ""))
    eta = st.get("eta_s")
    lines.append(f"rate:      {st.get('rate_per_s', 0):.1f} files/s over the last minute"
                 + (f"; ETA {human_duration(eta)}" if eta is not None else "")
                 + (f" (bound by {st['eta_bound_by']})" if st.get("eta_bound_by") and eta is not None else ""))
    stages = st.get("stages") or {}
    moving = [f"{work} {s['remaining']} left" + (f" at {s['rate_per_s']:.1f}/s" if s.get("rate_per_s") else "")
              for work, s in stages.items() if s.get("remaining")]
    if moving and depth:
        lines.append(f"stages:    {', '.join(moving)}")
    totals = st.get("totals") or {}
    embed = st.get("embedding")
    lines.append(f"finished:  {totals.get('done', 0)} done, {totals.get('failed', 0)} failed, "
                 f"{totals.get('gone', 0)} vanished before ingest"
                 + ("" if isinstance(embed, dict) else f"; {st.get('pending_embed', 0)} item(s) pending embedding"))
    if isinstance(embed, dict):
        lines.append(render_embedding(embed))
    for folder, why in sorted((st.get("folders_not_ingested") or {}).items()):
        lines.append(f"not ingesting {folder}: {why}")
    failures = st.get("failures") or []
    if failures:
        lines.append("failures (latest first):")
        for f in failures:
            lines.append(f"  #{f['id']} {f['path']}: {f['error']}")
    return "\n".join(lines) + "\n"


def render_embedding(q: dict[str, Any]) -> str:
    """The embedding worker's queue (GET /v1/index's `embed_queue`): what it will take, and why not otherwise."""
    who = f" ({q['embedder']})" if q.get("embedder") else ""
    if q.get("waiting_reason"):
        line = f"embedding: {q.get('waiting', 0)} waiting: {q['waiting_reason']}"
    else:
        line = f"embedding: {q.get('takeable', 0)} item(s) queued for the worker{who}"
    if q.get("attempts_ran_out"):
        line += (f"; {q['attempts_ran_out']} failed every attempt (their errors: `bitharborctl index stats`; "
                 "`queue --retry-failed` tries them again)")
    if q.get("reembed_blocked"):
        line += f"; not re-embedding: {q['reembed_blocked']}"
    return line


def cmd_queue(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.retry_failed:
        answer = client.request("POST", "/v1/ingest/retry", {})
        queued = answer.get("queued", [])
        if args.output != "json":
            print(f"queued {len(queued)} failed job(s) again, {answer.get('embed_requeued', 0)} item(s) for "
                  "embedding")
    if args.watch:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C stops watching: the report as it is now
            watch_queue(client, _view(args), 0)
    doc = client.request("GET", f"/v1/ingest?failures={args.failures}")
    try:
        embed = client.request("GET", "/v1/index").get("embed_queue")
    except ClientError:  # an older daemon, or no search service: the ingest document's count stands
        embed = None
    if isinstance(embed, dict) and args.output != "json":
        doc = dict(doc, embedding=embed)
    return emit(args, doc, render_queue)


# ---------------------------------------------------------------------------- parser


def register(sub: Any) -> None:
    i = sub.add_parser("ingest", help="add files or folders that are on the server to the library",
                       description="Queue files (or every file below a folder) that are on the server running "
                                   "bitharbord. Each is hashed, stored once by content, described, previewed and "
                                   "queued for embedding; a file whose content is already in the library only adds "
                                   "its path. Paths inside a watch folder take the folder's type.")
    i.add_argument("paths", nargs="+", metavar="PATH", help="files or folders on the server")
    i.add_argument("--type", choices=TYPES, help="media type (needed for paths outside the watch folders)")
    i.add_argument("--wait", action="store_true",
                   help="wait until every file is ingested (or failed), showing progress on stderr")
    add_output_flag(i, "the jobs as the daemon reports them")
    i.set_defaults(func=cmd_ingest)

    u = sub.add_parser("upload", help="send files from this machine into the library",
                       description="Stream files to bitharbord (PUT /v1/uploads) and ingest them. By default waits "
                                   "until each is in the library and prints its item id. Progress (bytes sent, "
                                   "rate, ETA) goes to stderr.")
    u.add_argument("files", nargs="+", metavar="FILE", help="files to upload")
    u.add_argument("--type", required=True, choices=TYPES, help="media type of the files")
    u.add_argument("--no-wait", action="store_true", help="return once the file is received and queued")
    add_output_flag(u, "each upload's answer: size and job")
    u.set_defaults(func=cmd_upload)

    q = sub.add_parser("queue", help="the ingest queue: depth, rate, ETA, failures with reasons",
                       description="What ingest is doing: unfinished jobs by stage, the rate over the last minute "
                                   "and the ETA, totals, items pending embedding, folders not ingested and why, and "
                                   "the latest failures with their reasons.")
    q.add_argument("--failures", type=int, default=10, help="how many recent failures to list (default 10)")
    q.add_argument("--retry-failed", action="store_true", help="queue every failed job again first")
    q.add_argument("--watch", action="store_true",
                   help="first follow the queue until it is empty (a progress bar with rate and the ETA of the "
                        "stage that bounds it, on stderr), then print the report")
    add_output_flag(q, "the GET /v1/ingest document")
    q.set_defaults(func=cmd_queue)
