"""bitharborctl: the BitHarbor client."""

from __future__ import annotations

import sys

from bitharborctl.cli import main as _main


def main() -> int:
    return _main()


if __name__ == "__main__":
    sys.exit(main())
