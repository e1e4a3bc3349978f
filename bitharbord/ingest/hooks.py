"""In-process links between the ingest service and the library provider, by catalog database path.

The reconcile loop builds the providers and the daemon builds the services; they share no object, and a
provider's `Context` does not carry the services' `env.shared`. So the ingest service registers here, under
its database path: how to wake its workers (after the provider queued files), whether the media storage is
ready (`env.shared["storage.media_ready"]`), and it reads back what the provider last saw of each watch folder
(for its status). Without a registered service (tests, `bitharbord --once`) the provider treats the media
storage as ready and nobody is woken: the next service start picks the queued jobs up from the journal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MediaReady = Callable[[], tuple[bool, str]]


@dataclass
class Hooks:
    wake: Callable[[], None]
    media_ready: MediaReady
    folders: dict[str, str] = field(default_factory=dict)  # watch folder -> why it is not ingested ("" = fine)


_REGISTRY: dict[str, Hooks] = {}


def _key(db_path: str | Path) -> str:
    return str(Path(db_path))


def register(db_path: str | Path, hooks: Hooks) -> None:
    _REGISTRY[_key(db_path)] = hooks


def unregister(db_path: str | Path, hooks: Hooks) -> None:
    if _REGISTRY.get(_key(db_path)) is hooks:
        del _REGISTRY[_key(db_path)]


def get(db_path: str | Path) -> Hooks | None:
    return _REGISTRY.get(_key(db_path))


def media_ready(db_path: str | Path) -> tuple[bool, str]:
    hooks = get(db_path)
    return hooks.media_ready() if hooks is not None else (True, "")


def wake(db_path: str | Path) -> None:
    hooks = get(db_path)
    if hooks is not None:
        hooks.wake()


def folder_state(db_path: str | Path, folder: str, problem: str) -> None:
    hooks = get(db_path)
    if hooks is not None:
        if problem:
            hooks.folders[folder] = problem
        else:
            hooks.folders.pop(folder, None)
