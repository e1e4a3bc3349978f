"""The Provider protocol (the one shape every resource kind shares) and the context `observe`/`apply` run in.
The reconcile core owns it; `bitharbord/providers/` implements it, one module per resource kind."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from bitharbord.config import Harbor
from bitharbord.links import Links
from bitharbord.reconcile.plan import Action
from bitharbord.system.runner import Runner

Spec = Mapping[str, Any]  # desired state of one resource, JSON-shaped
Observed = Mapping[str, Any]  # observed state of one resource, JSON-shaped


@dataclass
class Context:
    """What observe() and apply() may touch: the runner for processes, the harbor they serve."""

    runner: Runner
    harbor: Harbor
    state_dir: Path
    privileged: bool = True  # False under --state-dir as non-root: ownership is not managed
    extra: dict[str, Any] = field(default_factory=dict)  # one planning pass's caches (e.g. the storage facts)
    # The running services (the daemon's Links): none in tests and `--once`, where providers act alone and the
    # next service start finds their work in SQLite.
    links: Links = field(default_factory=Links)


class TemporaryError(RuntimeError):
    """Worth retrying later (busy device, network); the executor skips dependents and goes on."""


class Provider(Protocol):
    kind: ClassVar[str]

    def desired(self, harbor: Harbor) -> Mapping[str, Spec]:
        """Pure: what harbor.yaml wants, by resource name."""
        ...

    async def observe(self, ctx: Context, desired: Mapping[str, Spec]) -> Mapping[str, Observed]:
        """Read-only: what is there now, for the names wanted (and any others this kind owns)."""
        ...

    def diff(self, name: str, want: Spec | None, have: Observed | None) -> list[Action]:
        """Pure: the actions that take `have` to `want`; [] when they agree."""
        ...

    async def apply(self, action: Action, ctx: Context) -> None:
        """Carry out one action. Guarded (create only if missing) and safe to repeat."""
        ...

    # Optional, not part of the Protocol's required surface:
    #   notes(observed) -> list[str]           conditions worth showing in the plan (drift, pauses)
    #   recheck_in(observed) -> float | None   seconds until what was observed is expected to change (files
    #                                          still being written): the loop looks again that soon
