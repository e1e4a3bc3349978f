"""The systemd unit for bitharbord: rendered for a given ExecStart path, and installed atomically.

`systemd/bitharbord.service` in the repository is `render_unit()` with the default path (a test keeps the two
equal); `bitharborctl install-unit` writes `render_unit(<the installed bitharbord>)` to /etc/systemd/system.
"""

from __future__ import annotations

import os
import re
import sysconfig
from pathlib import Path

from bitharbord.system.fsio import write_atomic

UNIT_NAME = "bitharbord.service"
DEFAULT_EXEC_START = "/usr/local/bin/bitharbord"
DEFAULT_UNIT_DIR = "/etc/systemd/system"

# Characters systemd would split on, unquote, unescape or expand in an ExecStart path. '%' is escaped instead.
_UNSAFE = re.compile(r"[\s\"'\\$;`]|[\x00-\x1f\x7f]")


class UnitError(ValueError):
    """Bad input for the unit: what, where, what was expected. Nothing was written."""


_TEMPLATE = """\
# bitharbord.service: the BitHarbor daemon. Written by `bitharborctl install-unit`; change it with a drop-in
# (`systemctl edit bitharbord`), which survives re-installs.
#
# bitharbord runs as root: it creates md arrays (mdadm), filesystems (mkfs.*), fstab lines and .mount units,
# and owns the media roots. Everything it does not need is taken away below; each choice says why.
#
# Mounts: the sandboxing below gives the daemon its own mount namespace, so a plain mount(8) run by the daemon
# would be visible only inside it (see ReadWritePaths= in systemd.exec(5)). bitharbord therefore mounts and
# unmounts through PID 1 (`systemctl daemon-reload`, `systemctl start|stop <path>.mount`); mounts made on the
# host propagate into the daemon's namespace, writable.
#
# Paths: harbor.yaml's media_root, index_root and pool mount points must lie below /srv, /mnt or /media
# (writable here); elsewhere, add a drop-in with `ReadWritePaths=/that/path`. Watch folders may be anywhere
# (/home is read-only, which is all ingest needs).

[Unit]
Description=BitHarbor media appliance daemon (reconciles /etc/bitharbor/harbor.yaml)
After=local-fs.target remote-fs.target network.target
# At most 5 failed starts in 5 minutes, then stay failed (a broken install must not restart forever).
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
# READY=1 is sent once the API socket serves; until then the unit is "activating".
Type=notify
NotifyAccess=main
ExecStart={exec_start}
# bitharbord sends WATCHDOG=1 every WatchdogSec/2 from its event loop; an event loop blocked this long is
# killed (SIGABRT) and restarted by Restart=on-failure.
WatchdogSec=30s
Restart=on-failure
RestartSec=5s
# Importing the embedding stack can take a while on a small box before READY=1.
TimeoutStartSec=180s
# SIGTERM goes to bitharbord only: it finishes the action in flight (an mkfs, an mdadm --create) within 120 s
# and exits 0, so its children are not killed halfway. Whatever still runs at TimeoutStopSec gets SIGKILL.
KillMode=mixed
TimeoutStopSec=150s
SyslogIdentifier=bitharbord

# /run/bitharbor/bitharbord.sock (server.socket.path), /var/lib/bitharbor (journal, state), /etc/bitharbor
# (harbor.yaml, secrets), /var/cache/bitharbor (caches of the libraries it uses; /root is read-only).
RuntimeDirectory=bitharbor
RuntimeDirectoryMode=0755
StateDirectory=bitharbor
StateDirectoryMode=0750
ConfigurationDirectory=bitharbor
ConfigurationDirectoryMode=0750
CacheDirectory=bitharbor
CacheDirectoryMode=0750
Environment=XDG_CACHE_HOME=/var/cache/bitharbor
# Huge pages for the ANN index's memory (hnswlib's graph is one large malloc; glibc >= 2.35 advises THP for it
# with this tunable, which matters where THP is in 'madvise' mode): ~20% faster searches at 1M items.
Environment=GLIBC_TUNABLES=glibc.malloc.hugetlb=1

# Files. Everything is read-only except:
#   /etc     fstab, .mount units (storage.units_dir), mdadm.conf, /etc/bitharbor. The whole directory, not
#            single files: writes are atomic (temp file + rename in the same directory), and a rename onto a
#            single bind-mounted file fails with EBUSY.
#   /srv /mnt /media   mount points and the media/index roots below them ('-': ignored if missing).
#   /run/mdadm         mdadm's array map and its "creating" markers for udev (created just before start).
# /usr, /boot, /var (but /var/lib|cache/bitharbor), /run (but /run/bitharbor, /run/mdadm), /opt and the rest
# stay read-only; /home and /root too. ReadOnlyPaths=/run is explicit: with ProtectControlGroups= on, systemd 252
# left /run writable under ProtectSystem=strict (measured in a container).
ProtectSystem=strict
ReadOnlyPaths=/run
ReadWritePaths=/etc -/srv -/mnt -/media -/run/mdadm
ExecStartPre=+/bin/mkdir -p /run/mdadm
ProtectHome=read-only
PrivateTmp=yes
# Not PrivateDevices=: mdadm and mkfs need the real block devices (/dev/sd*, /dev/nvme*, /dev/md*, loop).
# Not ProtectKernelTunables=: mdadm writes /sys/block/md*/md/* to assemble and run arrays.
# Not ProtectClock=: it implies DeviceAllow=char-rtc, which turns on a device allow-list that hides the disks.
# Not MemoryDenyWriteExecute=: torch's CPU kernels (oneDNN) are JIT-compiled into writable+executable memory.
# Not PrivateNetwork=/IPAddressDeny=: the catalog fetches from TMDB, the Internet Archive and YouTube.
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectHostname=yes
NoNewPrivileges=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
SystemCallArchitectures=native
# Deny-list, not allow-list: mount, chown and the md/block ioctls stay available. A denied call fails with
# EPERM (logged by the daemon) instead of killing it.
SystemCallFilter=~@clock @cpu-emulation @debug @module @obsolete @raw-io @reboot @swap
SystemCallErrorNumber=EPERM
# AF_UNIX: the API socket, sd_notify, systemctl and udev. AF_INET/AF_INET6: the HTTP API and the catalog.
# AF_NETLINK: glibc's getaddrinfo (AI_ADDRCONFIG) and udev monitoring.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK

# Capabilities root keeps (all others are dropped from the bounding set, for bitharbord and its children):
#   CAP_SYS_ADMIN         mount/umount, md ioctls (mdadm --create/--assemble/--stop), BLKRRPART, loop devices
#   CAP_CHOWN             chown the media roots and the socket to paths.owner/group and server.socket.group
#   CAP_FOWNER            chmod/utime files and directories owned by another user (the media owner)
#   CAP_DAC_OVERRIDE      read and write below roots whose owner is not root (mode 0750 media:media)
#   CAP_MKNOD             mdadm creates /dev/md* nodes itself when udev has not (yet)
#   CAP_NET_BIND_SERVICE  server.http.listen on a port below 1024 (e.g. :80 on an appliance)
# Not CAP_SYS_RAWIO (no SG_IO/SMART), CAP_SYS_MODULE (md and filesystem modules are autoloaded by the kernel),
# CAP_FSETID (modes never carry setuid/setgid), CAP_SETUID/CAP_SETGID (nothing switches users), CAP_SYS_PTRACE.
CapabilityBoundingSet=CAP_SYS_ADMIN CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE CAP_MKNOD CAP_NET_BIND_SERVICE

[Install]
WantedBy=multi-user.target
"""


def _exec_start_word(exec_start: str | os.PathLike[str]) -> str:
    text = os.fspath(exec_start)
    if not text or not os.path.isabs(text):
        raise UnitError(f"ExecStart {text!r}: expected an absolute path to the bitharbord executable")
    if _UNSAFE.search(text):
        raise UnitError(
            f"ExecStart {text!r}: expected a path without whitespace, quotes, backslashes, '$', ';' or control "
            "characters (systemd would split, unquote or expand it); install bitharbord at a plainer path"
        )
    if os.path.normpath(text) != text:
        raise UnitError(f"ExecStart {text!r}: expected a normalised path, such as {os.path.normpath(text)!r}")
    return text.replace("%", "%%")  # '%' starts a systemd specifier


def render_unit(exec_start: str | os.PathLike[str] = DEFAULT_EXEC_START) -> str:
    """The text of bitharbord.service running `exec_start` (an absolute path). Pure; raises UnitError."""
    return _TEMPLATE.format(exec_start=_exec_start_word(exec_start))


def default_exec_start() -> Path:
    """Where this installation's `bitharbord` console script lives (the venv's bin/, or /usr/local/bin)."""
    return Path(sysconfig.get_path("scripts")) / "bitharbord"


def install_unit(dest_dir: str | os.PathLike[str], exec_start: str | os.PathLike[str], *,
                 require_executable: bool = True) -> Path:
    """Write `dest_dir/bitharbord.service` for `exec_start` atomically (mode 0644) and return its path.

    `dest_dir` is created (with its parents, mode 0755) when it does not exist, as `install -D` does for a
    staging root; a path that exists and is not a directory is refused. With `require_executable` (the
    default) `exec_start` must be an executable file; pass False when installing into a staging root where it
    does not exist yet. On a UnitError nothing is written (the checks come before the directory is created).
    The caller runs `systemctl daemon-reload` (the file alone changes nothing).
    """
    text = render_unit(exec_start)
    if require_executable:
        target = Path(exec_start)
        if not target.is_file() or not os.access(target, os.X_OK):
            raise UnitError(f"ExecStart {os.fspath(exec_start)!r}: no executable file there; give the path of "
                            f"the installed bitharbord (this installation's is {default_exec_start()})")
    dest = Path(dest_dir)
    if dest.exists() and not dest.is_dir():
        raise UnitError(f"unit directory {os.fspath(dest_dir)!r}: exists and is not a directory "
                        f"(usually {DEFAULT_UNIT_DIR})")
    try:
        dest.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise UnitError(f"unit directory {os.fspath(dest_dir)!r}: cannot create it: {exc.strerror or exc}") from None
    path = dest / UNIT_NAME
    data = text.encode()
    try:
        if path.read_bytes() == data:
            return path  # already installed: leave the file (and its mtime) alone
    except OSError:
        pass
    write_atomic(path, data, mode=0o644)
    return path
