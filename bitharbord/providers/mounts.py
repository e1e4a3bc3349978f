"""Mounts: the pool's filesystem at its mount point, by UUID, recorded either as a line in storage.fstab
(written atomically) or as a systemd .mount unit in storage.units_dir (plus its local-fs.target.wants link),
then mounted.

How it is mounted depends on where bitharbord runs (observed, shown in the plan):
- systemd is PID 1, not the sandbox, and the file written is one systemd reads (/etc/fstab, or a unit in
  /etc/systemd/system or /run/systemd/system): `systemctl daemon-reload` then `systemctl start <unit>`, so PID 1
  mounts it in the host's mount namespace (bitharbord.service gives the daemon its own namespace, where a
  plain mount(8) would stay invisible to the rest of the box);
- anywhere else (no systemd as PID 1, a container, --state-dir, a custom storage.fstab or units_dir):
  `mkdir -p` and mount(8) directly (`mount --fstab FILE MOUNTPOINT`, or by UUID for a unit), since nothing
  would read the file until the next boot. A missing mount whose filesystem is there is mounted again; a missing
filesystem is never re-created here: the mount fails as a temporary error, and everything that lives on the
pool waits for it (directories under the mount point require `mount.<mount point>`).
After mounting, the mount table is read again: unless the pool's own filesystem (device and UUID) is now
mounted there, the action fails (with `nofail`, mount(8) and systemctl exit 0 when the disk is missing)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import structlog

from bitharbord.config import Harbor
from bitharbord.pools import observe, state
from bitharbord.pools.assessment import raise_problems
from bitharbord.pools.mounttab import (
    WANTS_DIR,
    fstab_line,
    fstab_source,
    mount_unit,
    replace_fstab_entry,
    unit_is_ours,
    unit_name,
)
from bitharbord.pools.proof import RootProver
from bitharbord.pools.specs import pool_specs
from bitharbord.reconcile.plan import Action, Verb
from bitharbord.reconcile.provider import Context, Observed, Spec, TemporaryError
from bitharbord.system.fsio import fsync_dir, replace_durably, write_atomic
from bitharbord.system.runner import CommandError

log = structlog.get_logger("bitharbord.storage")


def _uuid_in(text: str | None) -> str | None:
    """The UUID our own fstab line (UUID=...) or unit (What=/dev/disk/by-uuid/...) names."""
    if not text:
        return None
    source = fstab_source(text) or ""
    if source.startswith("UUID="):
        return source[5:].lower()
    for line in text.splitlines():
        if line.startswith("What=/dev/disk/by-uuid/"):
            return line.rsplit("/", 1)[1].lower()
    return None


class Mounts:
    kind: ClassVar[str] = "mount"

    def desired(self, harbor: Harbor) -> Mapping[str, Spec]:
        return {
            pool.mount: {
                "mount": pool.mount, "pool": pool.name, "type": pool.filesystem, "options": list(pool.options),
                "with": pool.mount_with, "fstab": pool.fstab, "units_dir": pool.units_dir, "uuid": pool.uuid,
                "requires": [f"fs.{pool.name}"],
            }
            for pool in pool_specs(harbor)
        }

    async def observe(self, ctx: Context, desired: Mapping[str, Spec]) -> Mapping[str, Observed]:
        return await state.observed(self.kind, ctx, desired)

    def diff(self, name: str, want: Spec | None, have: Observed | None) -> list[Action]:
        if want is None:
            return []  # never unmounted or removed from fstab by us
        raise_problems(have)
        if have is None:
            return []
        mp = want["mount"]
        fs_state = have.get("fs_state")
        uuid = (have.get("fs_uuid")
                or (want["uuid"] if fs_state in ("empty", "pending") else None)
                or _uuid_in(have.get("fstab_line")) or _uuid_in(have.get("unit_text")) or want["uuid"])
        options = list(want["options"])
        reasons: list[str] = []
        after: dict[str, Any] = {"mount": mp, "uuid": uuid}
        before: dict[str, Any] = {"mount": mp, "mounted": bool(have.get("mounted"))}
        if want["with"] == "fstab":
            line = fstab_line(uuid, mp, want["type"], options)
            after.update(fstab=want["fstab"], line=line)
            if have.get("fstab_line") is None:
                reasons.append(f"no line in {want['fstab']}")
            elif have["fstab_line"] != line or have.get("fstab_lines", 1) > 1:
                before["line"] = have["fstab_line"]
                reasons.append(f"the line in {want['fstab']} differs")
            if unit_is_ours(have.get("unit_text")):
                after["remove_unit"] = have["unit_path"]
                reasons.append("its .mount unit moves to fstab")
        else:
            text = mount_unit(want["pool"], uuid, mp, want["type"], options)
            unit = str(Path(want["units_dir"]) / unit_name(mp))
            after.update(unit=unit, unit_text=text, wanted_by="local-fs.target")
            if have.get("unit_text") is None:
                reasons.append(f"no unit {unit}")
            elif have["unit_text"] != text:
                before["unit_text"] = have["unit_text"]
                reasons.append(f"{unit} differs")
            if not have.get("wants_link"):
                reasons.append("not wanted by local-fs.target")
            if have.get("fstab_lines"):
                after["remove_fstab_line"] = want["fstab"]
                reasons.append(f"its line in {want['fstab']} moves to a .mount unit")
        commands: list[tuple[str, ...]] = []
        via_systemd = have.get("via") == "systemd"
        if not have.get("mounted"):
            reasons.insert(0, "not mounted" + (" and its filesystem is not there (a disk missing?)"
                                               if fs_state == "absent" else ""))
            if via_systemd:  # PID 1 mounts it, in the host's mount namespace
                commands += [("systemctl", "daemon-reload"), ("systemctl", "start", unit_name(mp))]
            else:
                commands.append(("mkdir", "-p", mp))
                if want["with"] == "fstab":
                    commands.append(("mount", "--fstab", want["fstab"], mp))
                else:
                    commands.append(("mount", "-t", want["type"], "-o", ",".join(options) or "defaults",
                                     f"UUID={uuid}", mp))
        elif reasons:
            reasons.append("the new options take effect at the next mount")
            if via_systemd:
                commands.append(("systemctl", "daemon-reload"))
        if not reasons:
            return []
        fresh = not have.get("mounted") and have.get("fstab_line") is None and have.get("unit_text") is None
        return [Action(f"{self.kind}.{name}", Verb.CREATE if fresh else Verb.UPDATE, None if fresh else before,
                       after, "; ".join(reasons), requires=tuple(want["requires"]), commands=tuple(commands))]

    def notes(self, observed: Mapping[str, Observed]) -> list[str]:
        return [f"{self.kind}.{name}: its filesystem is not there (a disk missing?); everything on the pool waits "
                "for it, nothing is created on the bare mount point"
                for name, o in sorted(observed.items()) if not o.get("mounted") and o.get("fs_state") == "absent"]

    async def apply(self, action: Action, ctx: Context) -> None:
        assert action.after is not None
        after = action.after
        mp = after["mount"]
        if "line" in after:
            _edit_fstab(Path(after["fstab"]), mp, after["line"])
        if "unit" in after:
            _write_unit(Path(after["unit"]), after["unit_text"])
        if after.get("remove_fstab_line"):
            _edit_fstab(Path(after["remove_fstab_line"]), mp, None)
        if after.get("remove_unit"):
            _remove_unit(Path(after["remove_unit"]))
        state.forget(ctx)
        try:
            ran: tuple[str, ...] | None = None
            for argv in action.commands:
                mounting = _mounting(argv)
                if mounting and any(m.target == mp for m in await observe.current_mounts(ctx.runner)):
                    log.info("mount.exists", mount=mp)  # guarded: mount only if not mounted
                    continue
                log.info("mount.run", mount=mp, argv=list(argv))
                try:
                    await ctx.runner.run(argv)
                except CommandError as exc:
                    if mounting:  # the disk may come back: a later pass tries again
                        raise TemporaryError(f"cannot mount {mp}: {exc}") from exc
                    raise
                if mounting:
                    ran = tuple(argv)
            if any(_mounting(argv) for argv in action.commands):
                await verify_mounted(ctx, mp, ran)
        finally:
            state.forget(ctx)


def _mounting(argv: tuple[str, ...]) -> bool:
    return argv[0] == "mount" or argv[:2] == ("systemctl", "start")


async def verify_mounted(ctx: Context, mp: str, ran: tuple[str, ...] | None) -> None:
    """A mount that does not take is a failed action: `mount --fstab` with `nofail` (and `systemctl start
    x.mount`) exits 0 with nothing mounted when the disk is missing. Read the mount table again and fail unless
    the pool's own filesystem (device and UUID, `storage.proof`) is now mounted at `mp`."""
    proof = await RootProver(ctx.runner).prove(ctx.harbor, mp, ctx.runner)
    if not proof.ok:
        what = f"`{' '.join(ran)}` exited 0, but " if ran else ""
        log.error("mount.not_taken", mount=mp, argv=list(ran or ()), reason=proof.reason)
        raise TemporaryError(f"cannot mount {mp}: {what}{proof.reason}")
    log.info("mount.verified", mount=mp, reason=proof.reason)


def _edit_fstab(path: Path, target: str, line: str | None) -> None:
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        if line is None:
            return
        text, mode = "", 0o644
        path.parent.mkdir(parents=True, exist_ok=True)
    new = replace_fstab_entry(text, target, line)
    if new != text:
        write_atomic(path, new.encode("utf-8", errors="surrogateescape"), mode=mode)


def _write_unit(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text.encode("utf-8", errors="surrogateescape"), mode=0o644)
    wants = path.parent / WANTS_DIR
    wants.mkdir(exist_ok=True)
    link = wants / path.name
    if not os.path.lexists(link):
        tmp = wants / f".{path.name}.tmp"
        if os.path.lexists(tmp):
            tmp.unlink()
        tmp.symlink_to(f"../{path.name}")
        replace_durably(tmp, link)


def _remove_unit(path: Path) -> None:
    try:
        if not unit_is_ours(path.read_text(encoding="utf-8", errors="surrogateescape")):
            return  # not written by us: leave it
    except FileNotFoundError:
        return
    link = path.parent / WANTS_DIR / path.name
    if os.path.lexists(link):
        link.unlink()
    path.unlink()
    fsync_dir(path.parent)
