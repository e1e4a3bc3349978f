"""The stat `Fingerprint` of a file: which version of a file a path holds, known without reading it.

(size, mtime_ns, inode, dev): the scan of a watch folder records it, the ingest journal keeps it with each job
and source, and a file whose fingerprint has not changed is never read again. `dev` is not compared for sameness
(device numbers of md/loop/btrfs filesystems can change across a reboot), only used to pair moves.
"""

from __future__ import annotations

import os
from typing import NamedTuple


class Fingerprint(NamedTuple):
    size: int
    mtime_ns: int
    inode: int
    dev: int

    @classmethod
    def of(cls, st: os.stat_result) -> Fingerprint:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)

    def same_file_content(self, other: Fingerprint) -> bool:
        """Size, mtime and inode agree (dev may differ: it is not stable across reboots)."""
        return self[0] == other[0] and self[1] == other[1] and self[2] == other[2]
