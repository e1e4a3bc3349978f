"""Block-device facts, one module per command: the command's argv and a pure parser of what it prints.

    lsblk.py     lsblk --json --bytes --output NAME,PATH,...     every block device and its children
    blkid.py     blkid -p -o export DEV                          the signature on a device
    findmnt.py   findmnt -J [-b] -o TARGET,SOURCE,...            mounts, and the usage of a mount point
    mdadm.py     mdadm --detail [--export] / --scan              what an md array says of itself
    mdstat.py    cat /proc/mdstat                                the kernel's md arrays
    by_id.py     find /dev/disk/by-id ...                        stable disk names
    systemd.py   systemd-escape --path --suffix=mount            a mount point's unit name (computed)
    common.py    FactsError and the shared text readers

No I/O here: callers run the commands (through `bitharbord.system.runner`) and hand the text over. Every parser
raises `FactsError` (a ValueError) naming the command and the offending line when the text is not what that
command prints; fields a given tool version does not print come back as None. What the facts mean for a pool
(is a disk free?) is policy, not a fact: `bitharbord.pools.verdict`.

Recorded outputs of real runs (loop devices on the host, md arrays in a QEMU VM) live in tests/facts/.
"""
