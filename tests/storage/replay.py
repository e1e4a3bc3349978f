"""Record the exact commands the storage code runs (and their real outputs), and replay them later.

A scene file (tests/storage/scenes/<name>.json) holds what a real box answered to one observation:

    {"note": "...", "harbor": {...harbor.yaml as JSON...}, "files": {path: text},
     "commands": [{"argv": [...], "returncode": 0, "stdout": "...", "stderr": "..."}, ...]}

Scenes are recorded inside the QEMU VM by tests/vm/storage_driver.py (BITHARBOR_RECORD_SCENES=1 copies them
here); tests replay them through `ReplayRunner`, which answers only the recorded argv and fails loudly on any
other, so a change in the commands the code runs shows up as a test failure, not as silently made-up output.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bitharbord.config import Harbor
from bitharbord.system.runner import Argv, CommandError, Result, Runner

SCENES = Path(__file__).resolve().parent / "scenes"


@dataclass
class Recorder:
    """Wraps a real runner; while `capture` is a list, every call and its result is appended to it."""

    inner: Runner
    capture: list[dict[str, Any]] | None = None

    async def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True,
                  timeout: float | None = 600.0, env: Mapping[str, str] | None = None) -> Result:
        result = await self.inner.run(argv, input=input, check=False, timeout=timeout, env=env)
        if self.capture is not None:
            self.capture.append({"argv": list(result.argv), "returncode": result.returncode,
                                 "stdout": result.stdout, "stderr": result.stderr})
        if check and not result.ok:
            raise CommandError(result)
        return result


class UnexpectedCommand(AssertionError):
    pass


@dataclass
class ReplayRunner:
    """Answers recorded commands with their recorded results; anything else is an error."""

    commands: Mapping[Argv, Result]
    calls: list[Argv] = field(default_factory=list)

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]]) -> ReplayRunner:
        table: dict[Argv, Result] = {}
        for r in records:
            argv = tuple(r["argv"])
            table.setdefault(argv, Result(argv, int(r["returncode"]), r["stdout"], r["stderr"]))
        return cls(table)

    async def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True,
                  timeout: float | None = 600.0, env: Mapping[str, str] | None = None) -> Result:
        args = tuple(argv)
        self.calls.append(args)
        if args not in self.commands:
            raise UnexpectedCommand(f"not recorded in this scene: {' '.join(args)}")
        result = self.commands[args]
        if check and not result.ok:
            raise CommandError(result)
        return result


@dataclass(frozen=True)
class Scene:
    name: str
    note: str
    harbor: Harbor
    files: Mapping[str, str]
    commands: Sequence[Mapping[str, Any]]

    def runner(self) -> ReplayRunner:
        return ReplayRunner.from_records(self.commands)

    def harbor_in(self, tmp: Path) -> Harbor:
        """The scene's harbor with storage.fstab/units_dir moved into `tmp`, holding the recorded files."""
        data = self.harbor.model_dump(mode="json")
        old_fstab = data["storage"]["fstab"]
        data["storage"]["fstab"] = str(tmp / "fstab")
        data["storage"]["units_dir"] = str(tmp / "units")
        if old_fstab in self.files:
            (tmp / "fstab").write_text(self.files[old_fstab])
        return Harbor.model_validate(data)


def load_scene(name: str) -> Scene:
    data = json.loads((SCENES / f"{name}.json").read_text())
    return Scene(name, data.get("note", ""), Harbor.model_validate(data["harbor"]), data.get("files", {}),
                 data["commands"])


def save_scene(path: Path, note: str, harbor: Harbor, commands: Sequence[Mapping[str, Any]],
               files: Mapping[str, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"note": note, "harbor": harbor.model_dump(mode="json"), "files": dict(files or {}),
            "commands": list(commands)}
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def scene_names() -> list[str]:
    return sorted(p.stem for p in SCENES.glob("*.json"))
