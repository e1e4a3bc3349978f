"""Pure text of mount configuration: fstab lines (octal escapes), systemd .mount units, /proc/self/mountinfo."""

from __future__ import annotations

from bitharbord.system.facts.systemd import systemd_escape_path
from bitharbord.system.mountinfo import unmangle as unmangle

# fstab(5) / getmntent(3): space, tab, newline and backslash are written as \ooo.
_MANGLE = {" ": "\\040", "\t": "\\011", "\n": "\\012", "\\": "\\134"}
UNIT_HEADER = "# Written by bitharbord"
WANTS_DIR = "local-fs.target.wants"


def mangle(field: str) -> str:
    return "".join(_MANGLE.get(c, c) for c in field)


def fsck_pass(fstype: str) -> int:
    """ext4 is checked at boot after the root (2); xfs and btrfs have no boot-time fsck (0)."""
    return 2 if fstype.startswith("ext") else 0


def fstab_line(uuid: str, target: str, fstype: str, options: list[str] | tuple[str, ...]) -> str:
    return f"UUID={uuid} {mangle(target)} {fstype} {','.join(options) or 'defaults'} 0 {fsck_pass(fstype)}"


def _target_of(line: str) -> str | None:
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    fields = stripped.split()
    if len(fields) < 2:
        return None
    target = unmangle(fields[1])
    return target.rstrip("/") or "/"


def fstab_entries(text: str, target: str) -> list[str]:
    """Every line of `text` that mounts something at `target` (comments and blank lines skipped)."""
    return [line for line in text.splitlines() if _target_of(line) == target]


def fstab_source(line: str) -> str | None:
    fields = line.split()
    return fields[0] if fields else None


def replace_fstab_entry(text: str, target: str, line: str | None) -> str:
    """`text` with the first line for `target` replaced by `line` (appended when there is none) and any
    further lines for `target` dropped; `line=None` drops them all. Every other line stays as it was."""
    out: list[str] = []
    placed = False
    for old in text.splitlines():
        if _target_of(old) == target:
            if line is not None and not placed:
                out.append(line)
                placed = True
            continue
        out.append(old)
    if line is not None and not placed:
        out.append(line)
    return "\n".join(out) + "\n" if out else ""


# --------------------------------------------------------------------------- systemd


def unit_name(target: str) -> str:
    return systemd_escape_path(target, "mount")


def _unit_value(value: str) -> str:
    # Unit files expand %-specifiers in these settings; a literal % is written %%.
    return value.replace("%", "%%")


def unit_value_problem(path: str) -> str | None:
    """Why `path` cannot be written as Where= of a unit (or as an fstab field), None when it can."""
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return "contains a control character"
    if path != path.strip() or path.endswith("\\"):
        return "ends or starts with whitespace or a backslash, which unit files cannot express"
    return None


def mount_unit(pool: str, uuid: str, target: str, fstype: str, options: list[str] | tuple[str, ...]) -> str:
    """A systemd .mount unit for the pool; its file name must be unit_name(target)."""
    return (
        f"{UNIT_HEADER} for storage pool {pool} (harbor.yaml); edit harbor.yaml, not this file.\n"
        "[Unit]\n"
        f"Description=BitHarbor storage pool {_unit_value(pool)}\n"
        "Documentation=man:systemd.mount(5)\n"
        "\n"
        "[Mount]\n"
        f"What=/dev/disk/by-uuid/{uuid}\n"
        f"Where={_unit_value(target)}\n"
        f"Type={fstype}\n"
        f"Options={_unit_value(','.join(options) or 'defaults')}\n"
        "\n"
        "[Install]\n"
        "WantedBy=local-fs.target\n"
    )


def unit_is_ours(text: str | None) -> bool:
    return text is not None and text.startswith(UNIT_HEADER)


# --------------------------------------------------------------------------- /proc/self/mountinfo


def mountinfo_targets(text: str) -> set[str]:
    """Mount points listed in /proc/self/mountinfo (field 5, octal escapes undone)."""
    out: set[str] = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5:
            out.add(unmangle(fields[4]))
    return out
