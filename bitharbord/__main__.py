"""bitharbord: the BitHarbor daemon."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import os
import sys
from pathlib import Path

import structlog

from bitharbord import __version__, log
from bitharbord.daemon import Daemon, Settings
from bitharbord.system import native_output
from bitharbord.system.hugepages import reexec_with_hugepages

DEFAULT_CONFIG = Path("/etc/bitharbor/harbor.yaml")
DEFAULT_STATE = Path("/var/lib/bitharbor")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bitharbord",
        description="Reconcile harbor.yaml into a running media appliance, and serve its API.",
        epilog="Without --state-dir it manages the real box and needs root. With --state-dir it runs "
               "unprivileged in a sandbox: every path harbor.yaml names is created below STATE_DIR/root, "
               "ownership is left alone, and the socket is STATE_DIR/bitharbord.sock.",
    )
    p.add_argument("--config", type=Path, help=f"the harbor.yaml in force (default {DEFAULT_CONFIG}, "
                                                 "or STATE_DIR/harbor.yaml with --state-dir)")
    p.add_argument("--state-dir", type=Path, help="run sandboxed and unprivileged with all state below this dir")
    p.add_argument("--socket", type=Path, help="Unix socket path (default: server.socket.path)")
    p.add_argument("--http", help="TCP listen HOST:PORT, or 'off' (default: server.http.listen)")
    p.add_argument("--once", action="store_true", help="reconcile once (safe actions only) and exit")
    p.add_argument("--log-level", default=os.environ.get("BITHARBOR_LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"])
    p.add_argument("--version", action="version", version=f"bitharbord {__version__}")
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    http = "" if args.http is None else (None if args.http == "off" else args.http)
    if args.state_dir:
        return Settings.sandboxed(args.state_dir, config_path=args.config, socket_path=args.socket, http=http,
                                  once=args.once)
    if os.geteuid() != 0:
        raise SystemExit("bitharbord: managing the real box needs root; use --state-dir DIR for a sandbox")
    return Settings(config_path=args.config or DEFAULT_CONFIG, state_dir=DEFAULT_STATE,
                    socket_path=args.socket, http=http, once=args.once)


def main(argv: list[str] | None = None) -> int:
    """The program (argv None: sys.argv) or an in-process call with explicit arguments."""
    if argv is None:  # the program itself: give the ANN index huge pages (see system/hugepages.py)
        reexec_with_hugepages()
    args = parser().parse_args(argv)
    if argv is not None:  # in-process (tests): leave the caller's streams and file descriptors alone
        faulthandler.enable()
        log.configure(args.log_level)
        return asyncio.run(Daemon(settings_from(args)).run())
    settings = settings_from(args)
    # The daemon's output is JSON lines only: native prints (diskann's C++) go to STATE/native.log, the log to a
    # private copy of stderr, Python's stray prints and uncaught exceptions become events (system/native_output.py).
    try:
        diverted: native_output.Diverted | None = native_output.divert(settings.state_dir / native_output.NATIVE_LOG)
    except OSError as exc:
        diverted, why = None, f"{type(exc).__name__}: {exc}"
    stream = diverted.log if diverted is not None else sys.stderr
    faulthandler.enable(file=stream)  # a watchdog SIGABRT leaves Python stacks in the journal
    log.configure(args.log_level, stream=stream)
    log.capture_python_output()
    logger = structlog.get_logger("bitharbord")
    if diverted is not None:
        logger.info("native_output.diverted", path=str(diverted.path))
    else:
        logger.warning("native_output.not_diverted", error=why)
    return asyncio.run(Daemon(settings).run())


if __name__ == "__main__":
    sys.exit(main())
