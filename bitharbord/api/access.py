"""Who may call what: Unix-socket peers by credentials (root, the daemon's user, or the socket group); over TCP
the machine token from server.http.token_file (logins' JWTs are auth.py's; the guard in app.py decides)."""

from __future__ import annotations

import grp
import hmac
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket) -> Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


def supplementary_groups(pid: int) -> set[int]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Groups:"):
                return {int(g) for g in line.split()[1:]}
    except OSError:
        pass
    return set()


def unix_peer_allowed(peer: Peer, group: str | None) -> bool:
    if peer.uid in (0, os.geteuid()):
        return True
    if not group:
        return False
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return False
    return peer.gid == gid or gid in supplementary_groups(peer.pid)


def token_ok(header: str | None, token_file: str | None) -> bool:
    if not token_file or not header or not header.startswith("Bearer "):
        return False
    try:
        expected = Path(token_file).read_text().strip()
    except OSError:
        return False
    return bool(expected) and hmac.compare_digest(header[len("Bearer "):].strip(), expected)
