"""Export the library to a portable bundle, and import one (on the server: paths are the daemon's)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bitharborctl.output import add_output_flag, dump_json


def render_export(report: dict[str, Any], dest: str, references_only: bool) -> str:
    """What an export did, in its own terms (an export adds nothing to a library)."""
    failed = len(report["failed"])
    media = ("media not copied (the bundle refers to this box's media root)" if references_only
             else f"{report['blobs_bytes']} bytes of media copied")
    return f"exported: {report['items']} item(s) to {dest}, {media}" + (f", {failed} failed" if failed else "")


def render_import(report: dict[str, Any]) -> str:
    return (f"imported: {report['items']} item(s) in the bundle, {report.get('added', 0)} added, "
            f"{report.get('already_present', 0)} already present, {len(report['failed'])} failed, "
            f"{report['blobs_bytes']} bytes of media")


def _print(report: dict[str, Any], text: str, output: str) -> int:
    if output == "json":
        dump_json(report)
    else:
        print(text)
        for f in report["failed"]:
            print(f"  failed {f['hash'][:16]}: {f['error']}", file=sys.stderr)
    return 0 if not report["failed"] else 1


def cmd_export(args: argparse.Namespace) -> int:
    from bitharborctl.cli import client_for

    dest = str(Path(args.to).resolve())
    report = client_for(args).request("POST", "/v1/export", {"to": dest, "blobs": not args.references_only})
    return _print(report, render_export(report, dest, args.references_only), args.output)


def cmd_import(args: argparse.Namespace) -> int:
    from bitharborctl.cli import client_for

    body: dict[str, Any] = {"from": str(Path(args.source).resolve())}
    if args.blob_root:
        body["blob_root"] = str(Path(args.blob_root).resolve())
    report = client_for(args).request("POST", "/v1/import", body)
    return _print(report, render_import(report), args.output)


def register(sub: Any) -> None:
    e = sub.add_parser("export", help="write the library to a portable bundle directory",
                       description="Write every stored item (catalog rows, metadata and the media files, or only "
                                   "references to them) to a new bundle directory on the server. Vectors are "
                                   "not exported: the importing box re-embeds.")
    e.add_argument("--to", required=True, help="a new (or empty) directory on the server")
    e.add_argument("--references-only", action="store_true",
                   help="do not copy media files; the bundle refers to this box's media root")
    add_output_flag(e, "the export report")
    e.set_defaults(func=cmd_export)
    i = sub.add_parser("import", help="restore a bundle into this library (idempotent, hash-verified)",
                       description="Restore a bundle written by `export`: every file's BLAKE3 hash is verified "
                                   "before it is stored; items already in the library are skipped, so running "
                                   "it twice changes nothing.")
    i.add_argument("--from", dest="source", required=True, help="the bundle directory on the server")
    i.add_argument("--blob-root", help="for a references-only bundle: where the exporting box's media root is now")
    add_output_flag(i, "the import report")
    i.set_defaults(func=cmd_import)
