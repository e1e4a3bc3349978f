"""Command groups beyond the core (validate, plan, apply, diff, status), one module each.

A module here exposes `register(sub: argparse._SubParsersAction) -> None`, adding sub-parsers whose `func`
takes the parsed args and returns an exit code (use `bitharborctl.cli.client_for(args)` to reach the daemon).
List the module in MODULES; README's CLI table must document every command (tests/test_cli_docs.py checks)."""

from __future__ import annotations

MODULES: list[str] = ["ops", "setup", "bundles", "admin", "storage", "catalog", "ingest", "search", "verify"]
