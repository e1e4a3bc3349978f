"""Operations: install the systemd unit."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bitharborctl.units import DEFAULT_UNIT_DIR, UnitError, default_exec_start, install_unit


def cmd_install_unit(args: argparse.Namespace) -> int:
    exec_start = args.exec_start or default_exec_start()
    try:
        path = install_unit(args.dest or DEFAULT_UNIT_DIR, exec_start, require_executable=not args.no_check)
    except UnitError as exc:
        print(f"bitharborctl: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path} (ExecStart={exec_start})")
    print("next: systemctl daemon-reload && systemctl enable --now bitharbord")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("install-unit", help="install the systemd unit for this installation",
                       description="Write bitharbord.service (Type=notify, watchdog, hardened) with ExecStart "
                                   "pointing at this installation's bitharbord. Changes nothing else: then run "
                                   "`systemctl daemon-reload && systemctl enable --now bitharbord`.")
    p.add_argument("--exec-start", help="the bitharbord binary (default: the one next to this bitharborctl)")
    p.add_argument("--dest", help=f"where to write the unit (default {DEFAULT_UNIT_DIR})")
    p.add_argument("--no-check", action="store_true",
                   help="do not require --exec-start to exist and be executable (for a staging root)")
    p.set_defaults(func=cmd_install_unit)
