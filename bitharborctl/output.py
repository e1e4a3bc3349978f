"""How every command prints: `-o text` (a renderer's table) or `-o json` (the API document as it came)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

EXIT_OK = 0


def dump_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True, ensure_ascii=False)
    sys.stdout.write("\n")


def emit(args: argparse.Namespace, data: Any, render: Callable[[Any], str]) -> int:
    """Print `data` as args.output asks (JSON as it is, text through `render`); the command's exit code."""
    if args.output == "json":
        dump_json(data)
    else:
        sys.stdout.write(render(data))
    return EXIT_OK


def add_output_flag(parser: argparse.ArgumentParser, document: str) -> None:
    """The -o/--output flag; `document` names what -o json prints (e.g. "the /v1/index document")."""
    parser.add_argument("-o", "--output", choices=["text", "json"], default="text",
                        help=f"'text' (default) or 'json' ({document})")
