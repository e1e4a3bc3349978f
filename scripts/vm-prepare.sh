#!/bin/sh
# Prepare a machine (as root: CI) for the storage tests:
#  - Debian packages: loop-device scenes (tests/test_facts.py) need sfdisk, mkfs.xfs, mkfs.btrfs;
#    the mdadm VM (tests/test_vm_mdadm.py) needs qemu, a static busybox and mdadm.
#  - builds and caches the VM kernel + initramfs ($BITHARBOR_VM_CACHE or ~/.cache/bitharbor-vm),
#    downloading linux-image-6.1.0-*-amd64 with apt-get download (about 70 MB, once).
set -eu
cd "$(dirname "$0")/.."
PACKAGES="fdisk xfsprogs btrfs-progs qemu-system-x86 busybox-static mdadm"
if [ "$(id -u)" = 0 ]; then
    missing=""
    for p in $PACKAGES; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "vm-prepare: apt-get install$missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 $missing >/dev/null \
            || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends \
                 -o DPkg::Lock::Timeout=600 $missing >/dev/null; }
    fi
else
    echo "vm-prepare: not root; assuming these are installed: $PACKAGES" >&2
fi
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" tests/vm/harness.py --build
