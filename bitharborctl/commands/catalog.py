"""The catalog: `bitharborctl catalog search|list|add`, against the daemon's /v1/catalog routes.

  catalog search "Nosferatu" [--year 1922] [-o json]   the best copy per film, and every candidate with its
                                                         score and the reasons for it
  catalog list [-o json]                                every wanted entry, its state and download progress
  catalog add (--title T [--year Y] | --tmdb ID | --archive ID | --youtube URL
               | --youtube-playlist URL [--max N] | --youtube-channel URL [--max N])
                                                         want one more title (kept by the daemon, in SQLite)
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any
from urllib.parse import urlencode

from bitharborctl.output import add_output_flag, dump_json, emit

EXIT_OK = 0


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return "size unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            value = n / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{n} B"


def _file(f: dict[str, Any] | None) -> str:
    if not f:
        return "no usable video file"
    return f"{f['name']} ({f.get('format') or 'file'}, {_size(f.get('size'))})"


def render_search(data: dict[str, Any]) -> str:
    lines: list[str] = []
    for film in data.get("films", []):
        tmdb = film.get("tmdb") or {}
        head = film["title"] + (f" ({film['year']})" if film.get("year") else "")
        facts = []
        if tmdb.get("id"):
            facts.append(f"tmdb {tmdb['id']}")
        if film.get("runtime_min"):
            facts.append(f"{film['runtime_min']:.0f} min")
        if film.get("directors"):
            facts.append(", ".join(film["directors"]))
        lines.append(head + (f"  [{'; '.join(facts)}]" if facts else ""))
        for note in film.get("notes", []):
            lines.append(f"  note: {note}")
        best = film.get("best")
        if best:
            lines.append(f"  best: {best['identifier']} (score {best['score']:g}): {_file(best.get('video'))}")
        else:
            lines.append("  best: none: no candidate is accepted")
        candidates = film.get("candidates", [])
        lines.append(f"  candidates ({len(candidates)}):")
        for c in candidates:
            mark = "+" if c["accepted"] else "-"
            year = f" ({c['year']})" if c.get("year") else ""
            lines.append(f"    {mark} {c['score']:>6g}  {c['identifier']}  {c['title']!r}{year}")
            lines.extend(f"        {r}" for r in c.get("reasons", []))
        lines.append("")
    if not lines:
        return "No films found.\n"
    return "\n".join(lines)


def _when(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return ""
    delta = ts - time.time()
    if delta <= 0:
        return "due now"
    for unit, scale in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= scale:
            return f"in {delta / scale:.0f}{unit}"
    return f"in {delta:.0f}s"


def _detail(e: dict[str, Any]) -> str:
    state = e.get("state")
    progress = e.get("progress")
    if state == "downloading" and progress:
        pct = f" {progress['percent']:.0f}%" if progress.get("percent") is not None else ""
        total = f" of {_size(progress['total'])}" if progress.get("total") else ""
        return f"{e.get('identifier') or ''}{pct} ({_size(progress['bytes'])}{total})"
    if state == "matched":
        return "; ".join(e.get("download") or [str(e.get("identifier") or "")])
    if state == "ingested":
        ids = ", ".join(str(i) for i in e.get("media_ids") or [])
        return f"media {ids}" + (f" ({e['error']})" if e.get("error") else "")
    parts = [str(e["error"])] if e.get("error") else []
    if state in ("searching", "not_found", "failed") and e.get("next_try_at"):
        parts.append(f"next try {_when(e['next_try_at'])}")
    return "; ".join(parts)


def render_list(data: dict[str, Any]) -> str:
    entries = data.get("entries", [])
    if not entries:
        return "No wanted entries: add some under catalog.wanted in harbor.yaml, or with `bitharborctl catalog add`.\n"
    rows = [("KEY", "STATE", "TITLE", "DETAIL")]
    for e in entries:
        title = e.get("title") or e.get("label") or ""
        if e.get("year") and e.get("title"):
            title += f" ({e['year']})"
        rows.append((str(e["key"]), str(e["state"]).replace("_", " "), title, _detail(e)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    out = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip() for r in rows]
    counts = data.get("counts") or {}
    summary = ", ".join(f"{n} {state.replace('_', ' ')}" for state, n in counts.items() if n)
    return "\n".join(out) + ("\n\n" + summary if summary else "") + "\n"


def cmd_search(args: argparse.Namespace) -> int:
    from bitharborctl.cli import client_for

    query = {"q": args.query}
    if args.year is not None:
        query["year"] = str(args.year)
    return emit(args, client_for(args).request("GET", "/v1/catalog/search?" + urlencode(query)), render_search)


def cmd_list(args: argparse.Namespace) -> int:
    from bitharborctl.cli import client_for

    return emit(args, client_for(args).request("GET", "/v1/catalog"), render_list)


def cmd_add(args: argparse.Namespace) -> int:
    from bitharborctl.cli import client_for

    body: dict[str, Any]
    if args.title is not None:
        body = {"title": args.title}
        if args.year is not None:
            body["year"] = args.year
    elif args.tmdb is not None:
        body = {"tmdb": args.tmdb}
    elif args.archive is not None:
        body = {"archive": args.archive}
    elif args.youtube is not None:
        body = {"youtube": args.youtube}
    elif args.youtube_playlist is not None:
        body = {"youtube_playlist": args.youtube_playlist}
    else:
        body = {"youtube_channel": args.youtube_channel}
    if args.max is not None:
        if "youtube_playlist" not in body and "youtube_channel" not in body:
            print("bitharborctl: --max goes with --youtube-playlist or --youtube-channel", file=sys.stderr)
            return 1
        body["max"] = args.max
    if args.year is not None and "title" not in body:
        print("bitharborctl: --year goes with --title", file=sys.stderr)
        return 1
    data = client_for(args).request("POST", "/v1/catalog/ingest", body)
    entry = data["entry"]
    if args.output == "json":
        dump_json(data)
    elif data.get("created"):
        print(f"Added {entry['key']}: {entry['state']}. Follow it with `bitharborctl catalog list`.")
    else:
        print(f"Already wanted: {entry['key']} ({entry['state']}).")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("catalog", help="wanted titles: search, list, add",
                       description="The catalog: search TMDB and the Internet Archive for a film (the best copy "
                                   "and every candidate with its score and reasons), list the wanted entries "
                                   "and their states, add one more.")
    group = p.add_subparsers(dest="catalog_command", required=True, metavar="SUBCOMMAND")

    s = group.add_parser("search", help="find the best public-domain copy of a film",
                         description="Search for a film: one result per film TMDB knows by that title, each "
                                     "with its best Internet Archive copy and the full scored list with reasons. "
                                     "Nothing is downloaded.")
    s.add_argument("query", help='the title, e.g. "Nosferatu" or "Nosferatu (1922)"')
    s.add_argument("--year", type=int, help="the release year (matches within +-1)")
    add_output_flag(s, "the /v1/catalog/search document")
    s.set_defaults(func=cmd_search)

    ls = group.add_parser("list", help="wanted entries, their states and download progress",
                          description="Every wanted entry (harbor.yaml's catalog.wanted and those added with "
                                      "`catalog add`): searching, matched, downloading (with progress), "
                                      "downloaded, ingested, not found (and when it is searched again), failed.")
    add_output_flag(ls, "the /v1/catalog document")
    ls.set_defaults(func=cmd_list)

    a = group.add_parser("add", help="want one more title (kept by the daemon; harbor.yaml is not changed)",
                         description="Add a wanted entry through /v1/catalog/ingest. The daemon keeps it in its "
                                     "database and acquires it like the entries in harbor.yaml.")
    which = a.add_mutually_exclusive_group(required=True)
    which.add_argument("--title", help="a film by title (with --year to pin the release)")
    which.add_argument("--tmdb", type=int, help="a TMDB movie id")
    which.add_argument("--archive", help="an Internet Archive identifier")
    which.add_argument("--youtube", help="a video URL or YouTube id")
    which.add_argument("--youtube-playlist", help="a playlist URL (with --max)")
    which.add_argument("--youtube-channel", help="a channel URL (with --max)")
    a.add_argument("--year", type=int, help="the release year of --title")
    a.add_argument("--max", type=int, help="at most this many videos of --youtube-playlist/--youtube-channel")
    add_output_flag(a, "the created entry")
    a.set_defaults(func=cmd_add)
