"""`bitharborctl setup`: a wizard that writes a commented harbor.yaml. It changes nothing on the system itself
(plan/apply do): it reads the device list, proposes a pool and RAID level, asks for the roots, the admin account
and the TMDB key file, validates the result and writes it atomically.

Answers come from flags, else from stdin one line per question (so it runs headless: `printf '...' | bitharborctl
setup`), else the default (`--yes`, or an empty line / end of input)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bitharborctl.client import ClientError

LEVEL_RULES = {"none": (1, 1), "0": (2, 99), "1": (2, 99), "10": (4, 99)}


class SetupError(Exception):
    pass


def free_disks(devices: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Whole disks a pool may take without destroying anything: verdict free, not the root disk, not empty."""
    return [d for d in devices if d.get("type") == "disk" and d.get("verdict", {}).get("state") == "free"
            and not d.get("root") and (d.get("size") or 0) > 0]


def propose(disks: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """The largest group of disks whose sizes agree within 1%, and the RAID level that suits their count."""
    groups: list[list[dict[str, Any]]] = []
    for d in sorted(disks, key=lambda d: -int(d["size"])):
        for g in groups:
            if abs(int(g[0]["size"]) - int(d["size"])) <= int(g[0]["size"]) // 100:
                g.append(d)
                break
        else:
            groups.append([d])
    if not groups:
        return [], "none"
    best = max(groups, key=lambda g: (len(g), int(g[0]["size"])))
    best.sort(key=lambda d: list(disks).index(d))  # keep the order the device list gave
    n = len(best)
    if n == 1:
        return best, "none"
    if n < 4:
        return best[:2], "1"  # a mirror: survives a disk, and md resyncs it on its own
    return best[: n - n % 2], "10"


def _path_of(answer: str, disks: Sequence[dict[str, Any]]) -> str:
    answer = answer.strip()
    if answer.isdigit() and 1 <= int(answer) <= len(disks):
        d = disks[int(answer) - 1]
        return str((d.get("ids") or [d["path"]])[0])
    if answer.startswith("/dev/"):
        return answer
    raise SetupError(f"{answer!r} is neither a number from the list nor a /dev path")


class Asker:
    def __init__(self, yes: bool, stream: Any) -> None:
        self.yes = yes
        self.stream = stream
        self.interactive = stream.isatty()

    def __call__(self, question: str, default: str, check: Callable[[str], str] | None = None,
                 given: str | None = None) -> str:
        if given is not None:  # a flag answers the question; it is checked like any answer
            return check(given) if check else given
        while True:
            if self.yes:
                answer = ""
            else:
                print(f"{question} [{default}]: ", end="", file=sys.stderr, flush=True)
                line = self.stream.readline()
                answer = line.strip()
                if not self.interactive:
                    print(answer, file=sys.stderr)
            value = answer or default
            try:
                return check(value) if check else value
            except SetupError as exc:
                if self.yes or not self.interactive:
                    raise
                print(f"  {exc}", file=sys.stderr)


def _absolute(value: str) -> str:
    if not value.startswith("/"):
        raise SetupError(f"{value!r} is not an absolute path")
    return value.rstrip("/") or "/"


def _filesystem(value: str) -> str:
    if value not in ("ext4", "xfs", "btrfs"):
        raise SetupError(f"filesystem must be ext4, xfs or btrfs, not {value!r}")
    return value


def _name(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", value):
        raise SetupError(f"{value!r}: use a short lower-case name (a-z, 0-9, '-', '_')")
    return value


def _optional_absolute(value: str) -> str:
    return "" if value in ("", "none", "-") else _absolute(value)


def render(answers: dict[str, Any]) -> str:
    """A commented harbor.yaml from the answers (examples/harbor.yaml documents every field)."""
    lines = [
        "# harbor.yaml written by `bitharborctl setup`. Check it, then:",
        "#   bitharborctl validate -f harbor.yaml && bitharborctl plan -f harbor.yaml",
        "#   bitharborctl apply -f harbor.yaml",
        "# Every field is explained in examples/harbor.yaml.",
        "apiVersion: bitharbor/v1",
        "",
        "storage:",
    ]
    if answers["disks"]:
        lines += [
            "  pools:",
            "    - name: media",
            "      disks:",
            *[f"        - {d}" for d in answers["disks"]],
            f"      raid: \"{answers['raid']}\"              # none | 0 | 1 | 10",
            f"      filesystem: {answers['filesystem']}          # ext4 | xfs | btrfs",
            "      label: harbor-media",
            f"      mount: {answers['mount']}",
            "      options: [defaults, noatime]",
            "      # The disks were free when setup ran. If one turns out to hold data, apply refuses it; only",
            "      # `wipe: true` here AND `apply --allow-destroy` let BitHarbor erase it.",
            "      wipe: false",
        ]
    else:
        lines.append("  pools: []                    # no disks: BitHarbor uses the existing filesystem")
    lines += [
        "",
        "paths:",
        f"  media_root: {answers['media_root']}   # blobs and the catalog database",
        f"  index_root: {answers['index_root']}   # vectors and the search index (an SSD if you have one)",
        f"  config_root: {answers['config_root']}  # keys and generated secrets",
        "  mode: \"0750\"",
        "",
        "library:",
        "  watch:",
    ]
    if answers["watch"]:
        lines.append(f"    - {{path: {answers['watch']}, type: personal}}   # photos and home videos")
    else:
        lines[-1] = "  watch: []"
    lines += ["", "catalog:", "  wanted: []                   # titles to acquire; see examples/starter-pack.yaml"]
    if answers["tmdb_key_file"]:
        lines += ["  tmdb:", f"    key_file: {answers['tmdb_key_file']}"]
    lines += [
        "",
        "embedding:",
        "  backend: minilm",
        "",
        "admins:",
        f"  - name: {answers['admin']}",
        f"    password_file: {answers['password_file']}   # create it (mode 0600) before you log in",
    ]
    return "\n".join(lines) + "\n"


def _devices(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.devices_json:
        data = json.loads(Path(args.devices_json).read_text())
        return list(data.get("devices", []))
    from bitharborctl.cli import client_for

    try:
        return list(client_for(args).request("GET", "/v1/devices").get("devices", []))
    except ClientError as exc:
        print(f"note: no device list ({exc}); setting up without disks", file=sys.stderr)
        return []


def cmd_setup(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.exists() and not args.force:
        print(f"bitharborctl: {out} exists; choose another -o or pass --force", file=sys.stderr)
        return 1
    ask = Asker(args.yes, sys.stdin)
    try:
        disks = free_disks(_devices(args))
        proposal, level = propose(disks)
        if disks:
            print("Free disks:", file=sys.stderr)
            for i, d in enumerate(disks, 1):
                name = (d.get("ids") or [d["path"]])[0]
                print(f"  {i}. {name}  {int(d['size']) / 1e9:.1f} GB {'hdd' if d.get('rotational') else 'ssd'} "
                      f"{d.get('model') or ''}", file=sys.stderr)
        default_disks = ",".join(str(disks.index(d) + 1) for d in proposal) if proposal else "none"

        def check_disks(v: str) -> str:
            return "" if v in ("none", "-", "") else ",".join(_path_of(x, disks) for x in v.split(","))

        raw = check_disks(args.disks) if args.disks is not None else ask(
            "Disks for the media pool (numbers, comma-separated, or none)", default_disks, check_disks)
        chosen = [d for d in raw.split(",") if d]
        answers: dict[str, Any] = {"disks": chosen}
        if chosen:
            n = len(chosen)
            default_level = level if len(proposal) == n else ("none" if n == 1 else "1" if n < 4 else "10")

            def check_level(v: str) -> str:
                if v not in LEVEL_RULES:
                    raise SetupError("RAID level must be none, 0, 1 or 10")
                low, high = LEVEL_RULES[v]
                if not low <= n <= high or (v == "10" and n % 2):
                    raise SetupError(f"raid {v} does not fit {n} disk(s)")
                return v

            answers["raid"] = ask("RAID level", default_level, check_level, args.raid)
            answers["filesystem"] = ask("Filesystem (ext4, xfs, btrfs)", "ext4", _filesystem, args.filesystem)
            answers["mount"] = ask("Mount point", "/srv/harbor", _absolute, args.mount)
            base = answers["mount"]
            index_default = "/var/lib/bitharbor/index"
        else:
            base, index_default = "/srv/harbor", "/srv/harbor/index"
        answers["media_root"] = ask("Media root", f"{base}/media", _absolute, args.media_root)
        answers["index_root"] = ask("Index root", index_default, _absolute, args.index_root)
        answers["config_root"] = ask("Config root", "/etc/bitharbor/state", _absolute, args.config_root)
        answers["watch"] = ask("A folder to watch for photos and videos (or none)", "/srv/inbox",
                               _optional_absolute, args.watch)
        answers["admin"] = ask("Admin account name", "admin", _name, args.admin)
        answers["password_file"] = ask("Admin password file", "/etc/bitharbor/admin.password", _absolute,
                                       args.password_file)
        answers["tmdb_key_file"] = ask("TMDB API key file (or none)", "none", _optional_absolute,
                                       args.tmdb_key_file)
    except SetupError as exc:
        print(f"bitharborctl: {exc}", file=sys.stderr)
        return 1
    text = render(answers)
    from bitharbord.config import ConfigError, parse

    try:
        parse(text, str(out))
    except ConfigError as exc:
        print(f"bitharborctl: the answers do not make a valid harbor.yaml:\n{exc}", file=sys.stderr)
        return 1
    from bitharbord.system.fsio import write_atomic

    write_atomic(out.resolve(), text.encode(), mode=0o640)
    print(f"wrote {out}; next: bitharborctl plan -f {out}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("setup", help="write a commented harbor.yaml by answering a few questions",
                       description="A wizard: lists free disks, proposes a pool and RAID level, asks for the "
                                   "three roots, the admin account and the TMDB key file, and writes a commented, "
                                   "validated harbor.yaml. It changes nothing on the system: plan/apply do. "
                                   "Headless: give flags, or answers on stdin one per line, or --yes for defaults.")
    p.add_argument("-o", "--output", default="harbor.yaml", help="where to write (default ./harbor.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--yes", action="store_true", help="take the default for every question not given by a flag")
    p.add_argument("--devices-json", help="a saved `bitharborctl devices -o json` instead of asking the daemon")
    p.add_argument("--disks", help="comma-separated disk paths for the media pool ('' or none for no pool)")
    p.add_argument("--raid", help="RAID level: none, 0, 1 or 10")
    p.add_argument("--filesystem", help="the pool's filesystem: ext4, xfs or btrfs")
    p.add_argument("--mount", help="the pool's mount point")
    p.add_argument("--media-root", help="paths.media_root")
    p.add_argument("--index-root", help="paths.index_root")
    p.add_argument("--config-root", help="paths.config_root")
    p.add_argument("--watch", help="a watch folder for personal media")
    p.add_argument("--admin", help="the admin account name")
    p.add_argument("--password-file", help="the admin's password file")
    p.add_argument("--tmdb-key-file", help="the TMDB API key file")
    p.set_defaults(func=cmd_setup)
