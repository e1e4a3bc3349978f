"""A plan is plain data: frozen actions, a JSON round-trip and digests. No rendering, no I/O."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bitharbord.system.canonical import canonical_json as canonical_json
from bitharbord.system.canonical import digest as digest

PLAN_FORMAT = 1


class Verb(StrEnum):
    CREATE = "+"
    UPDATE = "~"
    REPLACE = "-/+"
    DELETE = "-"


def _freeze(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    # Round-trip through JSON so an Action only ever holds JSON-shaped data.
    return None if value is None else json.loads(canonical_json(value))


@dataclass(frozen=True)
class Action:
    address: str  # "<kind>.<name>", e.g. "dir./srv/harbor/media", "database.catalog"
    verb: Verb
    before: Mapping[str, Any] | None = None  # observed, for the diff
    after: Mapping[str, Any] | None = None  # desired
    reason: str = ""  # why: "missing", "mode 0755 -> 0750"
    destructive: bool = False  # loses data if applied; needs both opt-ins
    opted_in: bool = False  # harbor.yaml allows this destructive action (e.g. `wipe: true`)
    requires: tuple[str, ...] = ()  # addresses that must be applied first
    commands: tuple[tuple[str, ...], ...] = ()  # argv it will run, shown by `plan`
    # What apply needs that observe found (e.g. the library's file lists): never rendered, but carried in a saved
    # plan, so `apply plan.json` does exactly what the plan was made from. JSON-shaped; None for most kinds.
    payload: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if "." not in self.address:
            raise ValueError(f"action address {self.address!r} must be '<kind>.<name>'")
        object.__setattr__(self, "verb", Verb(self.verb))
        object.__setattr__(self, "before", _freeze(self.before))
        object.__setattr__(self, "after", _freeze(self.after))
        object.__setattr__(self, "payload", _freeze(self.payload))
        object.__setattr__(self, "requires", tuple(self.requires))
        object.__setattr__(self, "commands", tuple(tuple(c) for c in self.commands))

    @property
    def kind(self) -> str:
        return self.address.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.address.split(".", 1)[1]

    def to_dict(self) -> dict[str, Any]:
        out = {
            "address": self.address,
            "verb": self.verb.value,
            "before": self.before,
            "after": self.after,
            "reason": self.reason,
            "destructive": self.destructive,
            "opted_in": self.opted_in,
            "requires": list(self.requires),
            "commands": [list(c) for c in self.commands],
        }
        if self.payload is not None:
            out["payload"] = self.payload
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Action:
        return cls(
            address=data["address"],
            verb=Verb(data["verb"]),
            before=data.get("before"),
            after=data.get("after"),
            reason=data.get("reason", ""),
            destructive=bool(data.get("destructive", False)),
            opted_in=bool(data.get("opted_in", False)),
            requires=tuple(data.get("requires", ())),
            commands=tuple(tuple(c) for c in data.get("commands", ())),
            payload=data.get("payload"),
        )


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    observed_digest: str  # digest of the snapshot the plan was made from: the stale-plan check
    config_digest: str = ""  # digest of the normalised harbor.yaml
    config_source: str = ""  # the YAML text, so a saved plan carries the desired state it applies
    config_path: str = ""
    notes: tuple[str, ...] = field(default=())  # conditions worth showing, not actions (drift, pauses)

    def __post_init__(self) -> None:
        object.__setattr__(self, "actions", tuple(self.actions))
        object.__setattr__(self, "notes", tuple(self.notes))

    @property
    def empty(self) -> bool:
        return not self.actions

    def counts(self) -> tuple[int, int, int]:
        """(to add, to change, to destroy), counted like Terraform: a replace adds one and destroys one."""
        add = change = destroy = 0
        for a in self.actions:
            if a.verb is Verb.CREATE:
                add += 1
            elif a.verb is Verb.UPDATE:
                change += 1
            elif a.verb is Verb.DELETE:
                destroy += 1
            else:
                add += 1
                destroy += 1
        return add, change, destroy

    @property
    def destructive(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.destructive)

    def safe_part(self) -> Plan:
        """The actions the reconcile loop may apply on its own: nothing destructive, nor what depends on it."""
        blocked = {a.address for a in self.actions if a.destructive}
        kept: list[Action] = []
        for a in self.actions:
            if a.address in blocked or any(r in blocked for r in a.requires):
                blocked.add(a.address)
                continue
            kept.append(a)
        return Plan(
            tuple(kept), self.observed_digest, self.config_digest, self.config_source, self.config_path, self.notes
        )

    @property
    def digest(self) -> str:
        return digest(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "observed_digest": self.observed_digest,
            "config_digest": self.config_digest,
            "config_path": self.config_path,
            "config_source": self.config_source,
            "notes": list(self.notes),
            "actions": [a.to_dict() for a in self.actions],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        if data.get("format") != PLAN_FORMAT:
            raise ValueError(f"unsupported plan format {data.get('format')!r} (expected {PLAN_FORMAT})")
        return cls(
            actions=tuple(Action.from_dict(a) for a in data.get("actions", ())),
            observed_digest=str(data["observed_digest"]),
            config_digest=str(data.get("config_digest", "")),
            config_source=str(data.get("config_source", "")),
            config_path=str(data.get("config_path", "")),
            notes=tuple(data.get("notes", ())),
        )

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.from_dict(json.loads(text))


def summary(actions: Iterable[Action]) -> tuple[int, int, int]:
    return Plan(tuple(actions), "").counts()
