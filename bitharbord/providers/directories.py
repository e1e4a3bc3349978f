"""Directories: exist, owner, group, mode. Applied with the same `install`/`chmod`/`chown` argv the plan shows.

A directory on a storage pool is only created or changed on the pool's own filesystem: while the pool's
filesystem is not there (a disk missing) nothing is planned for it (a note says why), and apply proves the
filesystem under it again (`storage.state.require_proven`) right before each command."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Mapping
from typing import ClassVar

from bitharbord.config import Harbor, iter_paths
from bitharbord.pools import state
from bitharbord.reconcile.plan import Action, Verb
from bitharbord.reconcile.provider import Context, Observed, Spec


class Directories:
    kind: ClassVar[str] = "dir"

    def desired(self, harbor: Harbor) -> Mapping[str, Spec]:
        roots = {harbor.paths.media_root, harbor.paths.index_root, harbor.paths.config_root}
        mounts = sorted((p.mount for p in harbor.storage.pools), key=len, reverse=True)
        out: dict[str, Spec] = {}
        for field, path in iter_paths(harbor):
            managed = path in roots
            # A directory on a pool waits for its mount; never create it on the bare root filesystem.
            mount = next((m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")), None)
            out[path] = {
                "path": path,
                "field": field,
                "mode": harbor.paths.mode if managed else None,
                "owner": harbor.paths.owner if managed else None,
                "group": harbor.paths.group if managed else None,
                "requires": [f"mount.{mount}"] if mount else [],
            }
        return out

    async def observe(self, ctx: Context, desired: Mapping[str, Spec]) -> Mapping[str, Observed]:
        out: dict[str, Observed] = {}
        for path in desired:
            why = await state.blocked(ctx, path) if desired[path].get("requires") else None
            if why:
                out[path] = {"path": path, "blocked": why}
                continue
            try:
                st = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                # Missing. (A file where a *parent* should be is not ours to remove: the create fails
                # with install's own error, which the plan's apply reports.)
                continue
            out[path] = {
                "path": path,
                "is_dir": stat.S_ISDIR(st.st_mode),
                "mode": f"{stat.S_IMODE(st.st_mode):04o}",
                "owner": _user(st.st_uid),
                "group": _group(st.st_gid),
            }
        return out

    def diff(self, name: str, want: Spec | None, have: Observed | None) -> list[Action]:
        if want is None:
            return []  # a directory harbor.yaml no longer names is left alone, never deleted
        requires = tuple(want.get("requires", ()))
        after = {k: want[k] for k in ("path", "mode", "owner", "group") if want.get(k) is not None}
        if have is not None and have.get("blocked"):
            return []  # notes() says why; the pool's filesystem comes first
        if have is None:
            return [Action(f"{self.kind}.{name}", Verb.CREATE, None, after, "missing", requires=requires,
                           commands=(_install(name, want),))]
        if not have.get("is_dir"):
            return [Action(f"{self.kind}.{name}", Verb.REPLACE, dict(have), after,
                           "something that is not a directory is in the way", destructive=True,
                           requires=requires, commands=(("rm", "-f", name), _install(name, want)))]
        reasons: list[str] = []
        commands: list[tuple[str, ...]] = []
        if want.get("mode") and have.get("mode") != want["mode"]:
            reasons.append(f"mode {have.get('mode')} -> {want['mode']}")
            commands.append(("chmod", want["mode"], name))
        owner, group = want.get("owner"), want.get("group")
        wrong_owner = owner and have.get("owner") != owner
        wrong_group = group and have.get("group") != group
        if wrong_owner:
            reasons.append(f"owner {have.get('owner')} -> {owner}")
        if wrong_group:
            reasons.append(f"group {have.get('group')} -> {group}")
        if wrong_owner or wrong_group:
            commands.append(("chown", f"{owner or ''}{':' + group if group else ''}", name))
        if not reasons:
            return []
        before = {k: have[k] for k in ("path", "mode", "owner", "group") if k in have}
        return [Action(f"{self.kind}.{name}", Verb.UPDATE, before, after, ", ".join(reasons),
                       requires=requires, commands=tuple(commands))]

    def notes(self, observed: Mapping[str, Observed]) -> list[str]:
        return [f"{self.kind}.{name}: waiting: {o['blocked']}" for name, o in sorted(observed.items())
                if o.get("blocked")]

    async def apply(self, action: Action, ctx: Context) -> None:
        for argv in action.commands:
            await state.require_proven(ctx, argv[-1])
            if argv[0] == "install" and action.verb is Verb.CREATE and os.path.isdir(argv[-1]):
                # Guarded like disko: create only if missing. Mode/owner drift is its own UPDATE.
                continue
            await ctx.runner.run(argv)


def _install(path: str, want: Spec) -> tuple[str, ...]:
    argv = ["install", "-d"]
    for flag, key in (("-m", "mode"), ("-o", "owner"), ("-g", "group")):
        if want.get(key):
            argv += [flag, want[key]]
    return (*argv, path)


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)

