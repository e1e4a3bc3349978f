"""Search and the index: `bitharborctl search "…"` (GET /v1/search) and `bitharborctl index stats` (GET /v1/index).

  search "a vampire on a ship" [--type T] [-k N] [--min-score S] [-o json]
  search --image FILE [--type T] [-k N] [--min-score S] [-o json]     (POST /v1/search/image)
  index stats [-o json]
"""

from __future__ import annotations

import argparse
import mimetypes
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bitharborctl.output import add_output_flag, emit


def render_results(data: dict[str, Any]) -> str:
    results = data.get("results") or []
    if not results:
        return "No results.\n"
    rows = [("SCORE", "ID", "TYPE", "TITLE")]
    for r in results:
        title = str(r.get("title") or r.get("file_name") or f"item {r['id']}")
        if r.get("year"):
            title += f" ({r['year']})"
        rows.append((f"{float(r['score']):.3f}", str(r["id"]), str(r.get("type") or ""), title))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{a:>{widths[0]}}  {b:>{widths[1]}}  {c:<{widths[2]}}  {d}".rstrip() for a, b, c, d in rows]
    took = data.get("took_ms")
    lines.append("")
    lines.append(f"{len(results)} result(s)" + (f" in {took:.0f} ms" if isinstance(took, int | float) else "")
                 + (f" ({data['embedder']})" if data.get("embedder") else ""))
    return "\n".join(lines) + "\n"


def _ago(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "never"
    delta = max(0.0, time.time() - ts)
    for unit, scale in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= scale:
            return f"{delta / scale:.0f}{unit} ago"
    return f"{delta:.0f}s ago"


def render_stats(data: dict[str, Any]) -> str:
    lines = [
        f"embedder:      {data.get('embedder') or 'none yet'}" + (f" ({data['dim']}-d)" if data.get("dim") else ""),
        f"backend:       {data.get('backend') or '-'}"
        + (f" (installed: {data['installed_backend']})" if data.get("installed_backend")
           and data.get("installed_backend") != data.get("backend") else ""),
        f"vectors:       {data.get('vectors', 0)}",
    ]
    for name, n in sorted((data.get("vectors_by_type") or {}).items()):
        lines.append(f"  {name:<13}{n}")
    if data.get("fresh_tail") is not None:
        lines.append(f"fresh tail:    {data['fresh_tail']} (searched exactly until the next rebuild)")
    rb = data.get("last_rebuild")
    if rb:
        lines.append(f"last rebuild:  {_ago(rb.get('at'))}, took {rb.get('duration_s')} s "
                     f"(generation {rb.get('generation')}, {rb.get('mode')}, {rb.get('rows')} rows)")
    else:
        lines.append("last rebuild:  never (every vector is in the exact fresh tail)")
    if data.get("rebuilding"):
        lines.append("rebuilding:    yes, in the background")
    if data.get("rebuild_error"):
        lines.append(f"rebuild error: {data['rebuild_error']}")
    lines.append(f"queue:         {data.get('queue_depth')} waiting, {data.get('embed_items_per_s', 0)} items/s, "
                 f"{data.get('embedded_total', 0)} embedded since start")
    re = data.get("reembed")
    if re:
        lines.append(f"re-embed:      into {re['to']}: {re.get('embedded')} done, {re.get('pending')} to go "
                     "(the old index serves until then)")
    for f in data.get("embed_failures") or []:
        lines.append(f"failed:        item {f['media_id']}: {f['error']}")
    lines.append(f"phase:         {data.get('phase')}")
    return "\n".join(lines) + "\n"


def cmd_search(args: argparse.Namespace) -> int:
    from bitharborctl.cli import client_for
    from bitharborctl.client import ClientError

    if (args.query is None) == (args.image is None):
        raise ClientError("search needs a query or --image FILE (one of the two)")
    query: dict[str, str] = {"k": str(args.k)}
    if args.type:
        query["type"] = args.type
    if args.min_score is not None:
        query["min_score"] = str(args.min_score)
    if args.image is not None:
        try:
            image = Path(args.image).read_bytes()
        except OSError as exc:
            raise ClientError(f"cannot read {args.image}: {exc.strerror or exc}") from None
        data = client_for(args).request("POST", "/v1/search/image?" + urlencode(query), data=image,
                                        content_type=mimetypes.guess_type(args.image)[0] or "image/jpeg")
    else:
        data = client_for(args).request("GET", "/v1/search?" + urlencode({"q": args.query, **query}))
    return emit(args, data, render_results)


def cmd_index_stats(args: argparse.Namespace) -> int:
    from bitharborctl.cli import client_for

    return emit(args, client_for(args).request("GET", "/v1/index"), render_stats)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("search", help="search the library by meaning",
                       description="Search the library: the query is embedded by the daemon and matched against "
                                   "every item's metadata (and images, with an image embedder). With --image FILE, "
                                   "the example image is embedded instead (image embedders only). Prints score, id, "
                                   "type and title, best first.")
    s.add_argument("query", nargs="?", help='what to look for, e.g. "a vampire on a ship"')
    s.add_argument("--image", metavar="FILE", help="search by an example image instead of words (POST "
                                                   "/v1/search/image; needs an image embedder such as imagebind)")
    s.add_argument("--type", help="keep only these media types (comma-separated: movie, tv, online_video, "
                                  "personal, music, podcast, other)")
    s.add_argument("-k", type=int, default=10, help="how many results (default 10)")
    s.add_argument("--min-score", type=float, help="drop results scoring below this (cosine, -1..1)")
    add_output_flag(s, "the /v1/search document")
    s.set_defaults(func=cmd_search)

    i = sub.add_parser("index", help="the vector index: stats",
                       description="The vector index the daemon searches.")
    group = i.add_subparsers(dest="index_command", required=True, metavar="SUBCOMMAND")
    st = group.add_parser("stats", help="vectors per type, last rebuild, embedder, backend, queue",
                          description="Index statistics: embedder and dimension, backend, vectors per type, the "
                                      "fresh tail, the last rebuild and its duration, the embedding queue and "
                                      "throughput, a re-embed in progress.")
    add_output_flag(st, "the /v1/index document")
    st.set_defaults(func=cmd_index_stats)
