"""Plan -> Terraform-style text. Pure; the CLI imports this module and nothing else of the daemon's."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any

from bitharbord.reconcile.plan import Action, Plan, Verb

_COLOURS = {"green": "32", "yellow": "33", "red": "31", "magenta": "35", "bold": "1", "dim": "2"}
_VERB_COLOUR = {Verb.CREATE: "green", Verb.UPDATE: "yellow", Verb.DELETE: "red", Verb.REPLACE: "magenta"}
_WILL = {
    Verb.CREATE: "will be created",
    Verb.UPDATE: "will be updated in place",
    Verb.DELETE: "will be destroyed",
    Verb.REPLACE: "must be replaced",
}


class _Paint:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, colour: str) -> str:
        return f"\x1b[{_COLOURS[colour]}m{text}\x1b[0m" if self.enabled else text


def _value(v: Any) -> str:
    return json.dumps(v, sort_keys=True, ensure_ascii=False)


def _attributes(action: Action, paint: _Paint) -> list[str]:
    before: Mapping[str, Any] = action.before or {}
    after: Mapping[str, Any] = action.after or {}
    keys = sorted(set(before) | set(after))
    width = max((len(k) for k in keys), default=0)
    lines: list[str] = []
    for key in keys:
        label = key.ljust(width)
        if action.verb is Verb.CREATE:
            lines.append(f"      {paint('+', 'green')} {label} = {_value(after[key])}")
        elif action.verb is Verb.DELETE:
            lines.append(f"      {paint('-', 'red')} {label} = {_value(before[key])}")
        elif key not in before:
            lines.append(f"      {paint('+', 'green')} {label} = {_value(after[key])}")
        elif key not in after:
            lines.append(f"      {paint('-', 'red')} {label} = {_value(before[key])}")
        elif before[key] != after[key]:
            lines.append(f"      {paint('~', 'yellow')} {label} = {_value(before[key])} -> {_value(after[key])}")
    return lines


def render_action(action: Action, paint: _Paint) -> list[str]:
    header = f"  # {action.address} {_WILL[action.verb]}"
    if action.reason:
        header += f": {action.reason}"
    lines = [paint(header, "bold")]
    if action.destructive:
        guard = "allowed by harbor.yaml" if action.opted_in else "harbor.yaml does not allow it"
        lines.append(paint(f"  # DESTRUCTIVE ({guard}; apply needs --allow-destroy)", "red"))
    symbol = action.verb.value.rjust(3)
    lines.append(f"{paint(symbol, _VERB_COLOUR[action.verb])} {action.address}")
    lines.extend(_attributes(action, paint))
    lines.extend(paint(f"      $ {shlex.join(argv)}", "dim") for argv in action.commands)
    return lines


def render(plan: Plan, *, color: bool = False) -> str:
    paint = _Paint(color)
    out: list[str] = []
    if plan.empty:
        out.append(paint("No changes.", "green") + " The box matches harbor.yaml.")
    else:
        out.append("BitHarbor will perform the following actions:")
        for action in plan.actions:
            out.append("")
            out.extend(render_action(action, paint))
        add, change, destroy = plan.counts()
        out.append("")
        out.append(paint(f"Plan: {add} to add, {change} to change, {destroy} to destroy.", "bold"))
    if plan.notes:
        out.append("")
        out.extend(f"Note: {n}" for n in plan.notes)
    return "\n".join(out) + "\n"


def render_report(report: Mapping[str, Any], *, color: bool = False) -> str:
    """An executor report (ApplyReport.to_dict()) as text: one line an action, then a summary."""
    paint = _Paint(color)
    colour = {"applied": "green", "failed": "red", "not applied": "yellow", "skipped": "yellow"}
    lines = []
    counts: dict[str, int] = {}
    for r in report.get("results", []):
        outcome = r["outcome"]
        counts[outcome] = counts.get(outcome, 0) + 1
        line = f"{paint(outcome.ljust(11), colour.get(outcome, 'bold'))} {r['verb'].rjust(3)} {r['address']}"
        if r.get("error"):
            line += f": {r['error']}"
        lines.append(line)
    summary = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("applied", "failed", "not applied"))
    if counts.get("skipped"):  # changed while applying: the daemon plans them again
        summary += f", {counts['skipped']} skipped (changed since planned; the daemon plans them again)"
    lines.append(paint(("Apply complete! " if report.get("ok") else "Apply failed: ") + summary + ".", "bold"))
    return "\n".join(lines) + "\n"


def human_duration(seconds: float) -> str:
    """A duration for people: 42s, 3m07s, 2h05m (an ETA in status and `bitharborctl queue`)."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
