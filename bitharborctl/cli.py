"""bitharborctl: validate, plan, apply, diff and status, against bitharbord."""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from bitharborctl import commands
from bitharborctl.client import DEFAULT_SOCKET, ApiError, Client, ClientError
from bitharborctl.output import add_output_flag, dump_json, emit
from bitharbord.reconcile.plan import Plan
from bitharbord.reconcile.render import render, render_report

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


def _color(stream: TextIO, disabled: bool) -> bool:
    return not disabled and "NO_COLOR" not in os.environ and stream.isatty()


def _fail(message: str) -> int:
    print(f"bitharborctl: {message}", file=sys.stderr)
    return EXIT_ERROR


MAX_READ = 64 * 1024 * 1024  # a harbor.yaml, a saved plan or a token: never a device read whole


def _read(path: str) -> str:
    """A text file given on the command line ("-": stdin). Not UTF-8 -> ConfigError naming the line and column
    of the first bad byte (one line, no traceback)."""
    from bitharbord.config import decode

    try:
        if path == "-":
            raw = sys.stdin.buffer.read(MAX_READ + 1)
        else:
            with Path(path).open("rb") as f:
                raw = f.read(MAX_READ + 1)
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_READ:
        raise ClientError(f"cannot read {path}: larger than {MAX_READ} bytes")
    return decode(raw, path)


def _validate_local(path: str) -> str:
    """Validate before talking to the daemon, so errors name the user's file. Returns the text."""
    from bitharbord.config import parse

    text = _read(path)
    parse(text, path)
    return text


def client_for(args: argparse.Namespace) -> Client:
    token = None
    if args.token_file:
        token = _read(args.token_file).strip()
    return Client(socket_path=args.socket, host=args.host, token=token)


def _print_config_problems(err: ApiError) -> None:
    from bitharbord.config import Problem

    for p in err.body.get("error", {}).get("problems", []):
        print(Problem(p["file"], p["line"], p["column"], p["field"], p["message"]), file=sys.stderr)


# ---------------------------------------------------------------------------- commands


def cmd_validate(args: argparse.Namespace) -> int:
    from bitharbord.config import parse

    text = _read(args.file)
    harbor = parse(text, args.file)
    print(f"{args.file}: valid ({harbor.digest[:19]}…): {len(harbor.storage.pools)} pool(s), "
          f"{len(harbor.library.watch)} watch folder(s), {len(harbor.catalog.wanted)} wanted title(s)")
    return EXIT_OK


def _output_plan(plan: Plan, args: argparse.Namespace) -> None:
    out = args.output
    if out == "json":
        sys.stdout.write(plan.to_json())
        return
    if out not in (None, "text"):
        Path(out).write_text(plan.to_json())
    sys.stdout.write(render(plan, color=_color(sys.stdout, args.no_color)))
    if out not in (None, "text"):
        print(f"\nSaved the plan to {out}. Apply exactly this plan with: bitharborctl apply {out}")


def cmd_plan(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.file:
        body = {"config": _validate_local(args.file), "path": args.file}
    data = client_for(args).request("POST", "/v1/plan", body)
    plan = Plan.from_dict(data["plan"])
    _output_plan(plan, args)
    if args.detailed_exitcode and not plan.empty:
        return EXIT_CHANGES
    return EXIT_OK


def cmd_apply(args: argparse.Namespace) -> int:
    target = args.target or args.file
    if not target:
        return _fail("apply needs -f harbor.yaml or a saved plan file")
    body: dict[str, Any] = {"allow_destroy": args.allow_destroy}
    text = _read(target)
    saved = None
    if not args.file:
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            parsed = None
        if isinstance(parsed, dict) and "actions" in parsed:
            saved = Plan.from_dict(parsed)
    if saved is not None:
        body["plan"] = saved.to_dict()
    else:
        body.update(config=_validate_local(target), path=target)
    data = client_for(args).request("POST", "/v1/apply", body)
    plan = Plan.from_dict(data["plan"])
    report = data["report"]
    if args.output == "json":
        dump_json(data)
    else:
        color = _color(sys.stdout, args.no_color)
        sys.stdout.write(render(plan, color=color))
        if not plan.empty:
            sys.stdout.write("\n" + render_report(report, color=color))
    return EXIT_OK if report["ok"] else EXIT_ERROR


def _normalised(text: str, name: str) -> list[str]:
    from bitharbord.config import parse

    data = parse(text, name).model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).splitlines(keepends=True)


def cmd_diff(args: argparse.Namespace) -> int:
    new_text = _validate_local(args.file)
    current = client_for(args).request("GET", "/v1/config")
    old_name = current.get("path") or "(none)"
    old = _normalised(current["source"], old_name) if current.get("source") else []
    new = _normalised(new_text, args.file)
    lines = list(difflib.unified_diff(old, new, fromfile=f"in force: {old_name}", tofile=args.file))
    if not lines:
        print(f"No differences: {args.file} is the desired state in force.")
        return EXIT_OK
    color = _color(sys.stdout, args.no_color)
    for line in lines:
        if color and line.startswith("+") and not line.startswith("+++"):
            line = f"\x1b[32m{line.rstrip()}\x1b[0m\n"
        elif color and line.startswith("-") and not line.startswith("---"):
            line = f"\x1b[31m{line.rstrip()}\x1b[0m\n"
        sys.stdout.write(line if line.endswith("\n") else line + "\n")
    return EXIT_CHANGES if args.detailed_exitcode else EXIT_OK


def _ago(ts: float | None) -> str:
    if ts is None:
        return "never"
    return f"{max(0.0, time.time() - ts):.0f}s ago"


def render_status(st: dict[str, Any]) -> str:
    lines = [f"bitharbord {st['version']}, up {st['uptime_s']:.0f}s"
             + (f" (sandbox: {st['sandbox']})" if st.get("sandbox") else "")]
    cfg = st.get("config")
    lines.append(f"config:    {cfg['path']} ({cfg['digest'][:19]}…)" if cfg else "config:    none applied yet")
    lines.append(f"schema:    {st.get('schema_version') or 'no database yet'}")
    rec = st["reconcile"]
    lines.append(f"reconcile: {rec['last_result']}, {rec['pending']} pending, {rec['passes']} passes, "
                 f"last {_ago(rec['last_at'])}" + (f"; error: {rec['last_error']}" if rec["last_error"] else ""))
    for address in rec.get("blocked", []):
        lines.append(f"  waiting for an explicit apply: {address}")
    lines.append("conditions:")
    conditions = st.get("conditions", [])
    width = max([14, *(len(c["type"]) for c in conditions)])
    for c in conditions:
        lines.append(f"  {c['type']:<{width}} {c['status']!s:<6} {c.get('reason', '')}".rstrip())
    # A service may give its section a one-line "summary" (the rest is in `status -o json`).
    summaries = [(name, sec["summary"]) for name, sec in sorted((st.get("services") or {}).items())
                 if isinstance(sec, dict) and sec.get("summary")]
    if summaries:
        lines.append("services:")
        lines.extend(f"  {name:<{width}} {text}" for name, text in summaries)
    recent = st.get("recent_actions", [])
    if recent:
        lines.append("recent actions:")
        for r in recent[-10:]:
            err = f": {r['error']}" if r.get("error") else ""
            lines.append(f"  {r['outcome']:<11} {r['verb']:>3} {r['address']}{err}")
    return "\n".join(lines) + "\n"


def cmd_status(args: argparse.Namespace) -> int:
    return emit(args, client_for(args).request("GET", "/v1/status"), render_status)


# ---------------------------------------------------------------------------- parser


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bitharborctl",
        description="Show and apply plans for a BitHarbor box, and ask it how it is.",
        epilog="Exit codes: 0 success, 1 error; with --detailed-exitcode 2 means changes are present.",
    )
    p.add_argument("--socket", default=os.environ.get("BITHARBOR_SOCKET", DEFAULT_SOCKET),
                   help=f"bitharbord's Unix socket (default $BITHARBOR_SOCKET or {DEFAULT_SOCKET})")
    p.add_argument("--host", default=os.environ.get("BITHARBOR_HOST"),
                   help="talk HTTP to HOST:PORT instead of the socket (plan/apply need --token-file)")
    p.add_argument("--token-file", help="a file holding the bearer token for --host (server.http.token_file)")
    p.add_argument("--no-color", action="store_true", help="never colour output (colour only on a terminal)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    v = sub.add_parser("validate", help="check a harbor.yaml without contacting the daemon",
                       description="Check a harbor.yaml: every problem with file:line:column and field.")
    v.add_argument("-f", "--file", required=True, help="the harbor.yaml to check ('-' for stdin)")
    v.set_defaults(func=cmd_validate)

    pl = sub.add_parser("plan", help="show what apply would do (a dry run; changes nothing)",
                        description="Show, Terraform-style, what applying harbor.yaml would do: each action "
                                    "(+ create, ~ update, -/+ replace, - destroy), its reason and the commands "
                                    "it will run. Without -f, plans the desired state in force.")
    pl.add_argument("-f", "--file", help="the harbor.yaml to plan (default: the one in force)")
    pl.add_argument("-o", "--output", help="'text' (default), 'json' to print the plan as JSON, or a file "
                                           "path (e.g. plan.json) to save it for `apply PLAN`")
    pl.add_argument("--detailed-exitcode", action="store_true",
                    help="exit 0 when there are no changes, 2 when there are, 1 on error")
    pl.set_defaults(func=cmd_plan)

    ap = sub.add_parser("apply", help="make the box match harbor.yaml (or apply a saved plan)",
                        description="Apply harbor.yaml (-f), which then becomes the desired state the daemon "
                                    "keeps reconciling, or apply exactly a plan saved with `plan -o FILE` "
                                    "(refused if the box changed since). Destructive actions also need "
                                    "the opt-in in harbor.yaml (e.g. wipe: true) and --allow-destroy.")
    ap.add_argument("target", nargs="?", help="a saved plan file (from plan -o FILE)")
    ap.add_argument("-f", "--file", help="the harbor.yaml to apply")
    ap.add_argument("--allow-destroy", action="store_true",
                    help="permit destructive actions that harbor.yaml also opts into")
    ap.add_argument("-o", "--output", choices=["text", "json"], default="text",
                    help="'text' (default): the plan and one line per action; 'json': plan and report as JSON")
    ap.set_defaults(func=cmd_apply)

    d = sub.add_parser("diff", help="compare a harbor.yaml with the desired state in force",
                       description="A unified diff of the normalised desired state: the daemon's harbor.yaml "
                                   "in force against FILE.")
    d.add_argument("-f", "--file", required=True, help="the harbor.yaml to compare")
    d.add_argument("--detailed-exitcode", action="store_true", help="exit 2 when they differ")
    d.set_defaults(func=cmd_diff)

    s = sub.add_parser("status", help="how the box is: config, reconcile state, conditions",
                       description="The daemon's view of the box: config in force, schema version, the last "
                                   "reconcile pass, conditions and the recent actions.")
    add_output_flag(s, "the /v1/status document")
    s.set_defaults(func=cmd_status)

    for module in commands.MODULES:
        importlib.import_module(f"bitharborctl.commands.{module}").register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from bitharbord.config import ConfigError

    args = parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_ERROR
    except ApiError as exc:
        if exc.code == "invalid_config":
            _print_config_problems(exc)
            return EXIT_ERROR
        return _fail(str(exc))
    except ClientError as exc:
        return _fail(str(exc))
    except BrokenPipeError:
        return EXIT_ERROR
