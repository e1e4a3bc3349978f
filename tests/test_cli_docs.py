"""Every bitharborctl command and option is documented in the README and has --help text."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bitharborctl.cli import parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_command_is_documented(name: str) -> None:
    sub = subcommands()[name]
    assert f"bitharborctl {name}" in README, f"README does not document `bitharborctl {name}`"
    assert sub.description, f"`bitharborctl {name} --help` has no description"
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{name} {action.option_strings} has no help text"
            assert any(opt in README for opt in action.option_strings if opt.startswith("--")) or any(
                f"{opt} " in README for opt in action.option_strings
            ), f"README does not mention {name} {action.option_strings}"


def test_global_options_are_documented() -> None:
    for opt in ("--socket", "--host", "--token-file", "--no-color"):
        assert opt in README
