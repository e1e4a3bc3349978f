"""verify: scrub the library (POST /v1/verify), follow its progress (GET /v1/verify), print the report.

Progress goes to stderr: a bar with rate and ETA redrawn in place on a terminal, one line per step in a pipe.
Exit codes: 0 clean (or every problem repaired), 2 problems left or damaged items, 1 error."""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

from bitharborctl.output import add_output_flag, dump_json
from bitharborctl.progress import Snapshot, is_terminal, open_view, plain_line

EXIT_OK, EXIT_ERROR, EXIT_FOUND = 0, 1, 2


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def snapshot(run: dict[str, Any], t: float) -> Snapshot:
    """A running scrub (GET /v1/verify's `running`) as a progress snapshot: step n/N; for the blob step the
    bytes re-hashed of all, with the daemon's rate and ETA."""
    label = f"verify #{run['id']} [{run['step_index']}/{len(run['steps'])}] {run['step']}"
    total = float(run.get("bytes_total") or 0)
    if not total:  # a step that reads no blobs: its name is all there is to show
        return Snapshot(t=t, label=label, step=str(run["step"]), done=0.0, total=None, unit="B")
    eta = run.get("eta_s")
    return Snapshot(t=t, label=label, step=str(run["step"]), done=float(run.get("bytes_done") or 0), total=total,
                    unit="B", rate=float(run.get("rate_bytes_per_s") or 0.0) or None,
                    eta=None if eta is None else float(eta))


def progress_line(run: dict[str, Any]) -> str:
    """One progress line: step n/N, and for the blob step a bar, bytes, rate and ETA."""
    snap = snapshot(run, 0.0)
    return plain_line(snap, snap.rate, snap.eta)


def render_report(r: dict[str, Any]) -> str:
    took = (r.get("finished_at") or r["started_at"]) - r["started_at"]
    mode = " (repair)" if r.get("repair") else ""
    lines = [f"verify #{r['id']}{mode}: {r['result']}: {r['problems']} problem(s), {r.get('damaged', 0)} damaged "
             f"item(s), {_mb(r.get('bytes_hashed') or 0)} of blobs re-hashed in {took:.1f} s"]
    width = max([8, *(len(c["name"]) for c in r["checks"])])
    lines.append(f"  {'CHECK':<{width}}  {'RESULT':<6}  {'PROBLEMS':>8}  COUNTS")
    for c in r["checks"]:
        counts = " ".join(f"{k}={v}" for k, v in c["counts"].items())
        lines.append(f"  {c['name']:<{width}}  {'ok' if c['ok'] else 'FAIL':<6}  {c['problem_count']:>8}  {counts}")
        for p in c["problems"]:
            where = " ".join(x for x in (f"item {p['item']}" if p["item"] is not None else "", p["path"] or "") if x)
            fixed = f"  [repaired: {p['repaired']}]" if p.get("repaired") else ""
            lines.append(f"      {p['kind']}: {where + ': ' if where else ''}{p['detail']}{fixed}")
        if c["problem_count"] > len(c["problems"]):
            lines.append(f"      … and {c['problem_count'] - len(c['problems'])} more (-o json lists the first ones)")
        if c.get("note"):
            lines.append(f"      note: {c['note']}")
    if r.get("damaged_items"):
        lines.append("damaged items (restore their files from a backup):")
        lines.extend(f"  item {d['item']}: {d['what']}" for d in r["damaged_items"])
    left = sum(1 for c in r["checks"] for p in c["problems"] if not p.get("repaired"))
    if left and not r.get("repair"):
        lines.append("run `bitharborctl verify --repair` to repair what can be repaired without losing anything")
    return "\n".join(lines) + "\n"


def cmd_verify(args: argparse.Namespace) -> int:
    from bitharborctl.cli import client_for

    if args.rate is not None and not (math.isfinite(args.rate) and args.rate > 0):
        print(f"bitharborctl: --rate: expected a positive number of MB/s (e.g. 50), got {args.rate:g}",
              file=sys.stderr)
        return EXIT_ERROR
    client = client_for(args)
    body: dict[str, Any] = {"repair": args.repair}
    if args.rate is not None:
        body["rate"] = args.rate
    started = client.request("POST", "/v1/verify", body)
    run_id = int(started["id"])
    progress = open_view(sys.stderr, no_color=getattr(args, "no_color", False))
    tty = is_terminal(sys.stderr)
    report: dict[str, Any] | None = None
    try:
        while True:
            state = client.request("GET", "/v1/verify")
            run = state.get("running")
            last = state.get("last") or {}
            if run and int(run.get("id") or 0) == run_id:
                progress.update(snapshot(run, time.monotonic()))
            elif int(last.get("id") or 0) >= run_id:
                report = last if int(last["id"]) == run_id else None
                break
            elif not run:
                break
            time.sleep(0.5 if tty else 1.0)
    finally:
        progress.close()
    if report is None or report.get("result") == "interrupted":
        print(f"bitharborctl: verify #{run_id} did not finish (the daemon stopped?): run it again",
              file=sys.stderr)
        return EXIT_ERROR
    if args.output == "json":
        dump_json(report)
    else:
        sys.stdout.write(render_report(report))
    return EXIT_OK if report["result"] in ("clean", "repaired") else EXIT_FOUND


def register(sub: Any) -> None:
    p = sub.add_parser("verify", help="scrub the library: re-hash every blob, check database, vectors, index",
                       description="Check the whole library, each check reported apart: every blob re-hashed "
                                   "(BLAKE3) against its name; every item has its blob and every blob an item; "
                                   "SQLite integrity and foreign keys; per embedder, vectors against idmap and "
                                   "items, duplicate vectors, the ANN index against exact search; previews. "
                                   "Exit 0 clean, 2 problems or damaged items, 1 error.")
    p.add_argument("--repair", action="store_true",
                   help="also repair what loses nothing: re-embed wrong vectors, re-queue missing previews, "
                        "rebuild a bad ANN index, quarantine a blob whose content changed (its item is marked "
                        "damaged, never deleted)")
    p.add_argument("--rate", type=float, metavar="MB/s",
                   help="read blobs at most this fast (default: harbor.yaml library.verify.rate)")
    add_output_flag(p, "the verify report")
    p.set_defaults(func=cmd_verify)
