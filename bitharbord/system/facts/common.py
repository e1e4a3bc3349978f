"""What every facts parser shares: `FactsError`, and the readers of a command's text (lines, a JSON list, optional
strings, numbers and booleans) that raise it naming the command and the offending line."""

from __future__ import annotations

import json
from typing import Any


class FactsError(ValueError):
    """The text is not the output of the command it was given as."""

    def __init__(self, source: str, message: str, line: int | None = None) -> None:
        where = f"{source}, line {line}" if line is not None else source
        super().__init__(f"{where}: {message}")
        self.source = source
        self.line = line


def text_lines(text: str, source: str) -> list[str]:
    if not isinstance(text, str):
        raise FactsError(source, f"expected the command's output as text, got {type(text).__name__}")
    if "\0" in text:
        raise FactsError(source, "output contains NUL bytes; expected text")
    return text.splitlines()


def json_list(text: str, source: str, key: str) -> list[Any]:
    text_lines(text, source)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FactsError(source, f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise FactsError(source, f'expected a JSON object with a "{key}" list')
    items: list[Any] = data[key]
    return items


def opt_str(value: Any, source: str, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise FactsError(source, f"{what}: expected a string or null, got {value!r}")
    value = value.strip()
    return value or None


def opt_int(value: Any, source: str, what: str) -> int | None:
    """JSON numbers, or digit strings (older util-linux prints every column as a string)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise FactsError(source, f"{what}: expected a number of bytes, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise FactsError(source, f"{what}: expected a number of bytes (use --bytes / -b), got {value!r}")


def opt_bool(value: Any, source: str, what: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if value in ("0", "1", 0, 1):
        return value in ("1", 1)
    raise FactsError(source, f"{what}: expected true/false or 0/1, got {value!r}")



def int_or_none(value: str | None, src: str, what: str, line: int | None = None) -> int | None:
    if value is None or value.strip() in ("", "-"):
        return None
    if not value.strip().isdigit():
        raise FactsError(src, f"{what}: expected a number, got {value!r}", line)
    return int(value)
