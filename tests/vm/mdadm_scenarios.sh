# Runs inside the test VM (tests/vm/harness.py) as root, with 4 blank disks /dev/vda../dev/vdd.
# Creates md arrays and records what mdadm, /proc/mdstat, lsblk, blkid and findmnt say about them.
# Every recording NAME becomes $OUT/NAME.cmd (argv, one per line), NAME.out, NAME.err and NAME.rc.
set -u
LSBLK_COLUMNS=NAME,PATH,KNAME,TYPE,SIZE,ROTA,MODEL,SERIAL,MOUNTPOINTS,PKNAME,FSTYPE,LABEL,UUID
FINDMNT_COLUMNS=TARGET,SOURCE,FSTYPE,OPTIONS,SIZE,USED,AVAIL

rec() {
    name=$1; shift
    printf '%s\n' "$@" > "$OUT/$name.cmd"
    "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"
    echo $? > "$OUT/$name.rc"
}
step() { echo "== step $* ($(cut -d' ' -f1 /proc/uptime)s)"; }
md_state() { rec "$1-export" mdadm --detail --export "$2"; rec "$1-detail" mdadm --detail "$2";
             rec "$1-mdstat" cat /proc/mdstat; }
wipe() { mdadm --zero-superblock "$@" 2>/dev/null; for d in "$@"; do dd if=/dev/zero of="$d" bs=1M count=4 status=none; done; }
limit() { echo "$1" > /proc/sys/dev/raid/speed_limit_min; echo "$2" > /proc/sys/dev/raid/speed_limit_max; }

mdadm --version
mkdir -p /mnt/pool

step raid0
mdadm --create /dev/md0 --level=0 --raid-devices=2 /dev/vda /dev/vdb --run --quiet
md_state raid0 /dev/md0
rec raid0-scan mdadm --detail --scan
rec raid0-lsblk lsblk --json --bytes --output $LSBLK_COLUMNS /dev/vda /dev/vdb
rec raid0-blkid blkid -p -o export /dev/vda /dev/vdb
mdadm --stop /dev/md0
rec stopped-lsblk lsblk --json --bytes --output $LSBLK_COLUMNS /dev/vda /dev/vdb /dev/vdc
rec stopped-blkid blkid -p -o export /dev/vda /dev/vdb /dev/vdc
rec stopped-examine-scan mdadm --examine --scan
rec stopped-examine-scan-verbose mdadm --examine --scan --verbose
# One member of a raid0, added incrementally, makes an inactive array.
mdadm --incremental /dev/vda
rec inactive-mdstat cat /proc/mdstat
rec inactive-detail mdadm --detail /dev/md0
mdadm --stop --scan
wipe /dev/vda /dev/vdb

step raid1
limit 50000 1000000
mdadm --create /dev/md1 --level=1 --raid-devices=2 /dev/vda /dev/vdb --run --quiet
mdadm --wait /dev/md1
md_state raid1 /dev/md1
rec raid1-scan mdadm --detail --scan
rec raid1-scan-verbose mdadm --detail --scan --verbose
mkfs.ext4 -q -L pool /dev/md1
mount /dev/md1 /mnt/pool
rec raid1-lsblk lsblk --json --bytes --output $LSBLK_COLUMNS /dev/vda /dev/vdb /dev/vdc
rec raid1-blkid blkid -p -o export /dev/vda /dev/vdb /dev/md1
rec raid1-findmnt findmnt -J -b -o $FINDMNT_COLUMNS /mnt/pool
umount /mnt/pool
mdadm /dev/md1 --fail /dev/vdb
md_state raid1-failed /dev/md1
mdadm /dev/md1 --remove /dev/vdb
md_state raid1-degraded /dev/md1
rec raid1-degraded-scan mdadm --detail --scan
# Put the disk back slowly enough to see the recovery in flight.
limit 100 500
mdadm --zero-superblock /dev/vdb
mdadm /dev/md1 --add /dev/vdb
sleep 2
md_state raid1-recovering /dev/md1
mdadm --stop /dev/md1
wipe /dev/vda /dev/vdb

step resync
limit 100 500
mdadm --create /dev/md2 --level=1 --raid-devices=2 /dev/vda /dev/vdb --run --quiet
sleep 2
md_state raid1-resync /dev/md2
mdadm --stop /dev/md2
wipe /dev/vda /dev/vdb

step raid1-spare
limit 50000 1000000
mdadm --create /dev/md3 --level=1 --raid-devices=2 --spare-devices=1 /dev/vda /dev/vdb /dev/vdc --run --quiet
mdadm --wait /dev/md3
md_state raid1-spare /dev/md3
rec raid1-spare-scan mdadm --detail --scan
mdadm --stop /dev/md3
wipe /dev/vda /dev/vdb /dev/vdc

step raid10
mdadm --create /dev/md10 --level=10 --raid-devices=4 /dev/vda /dev/vdb /dev/vdc /dev/vdd --run --quiet
mdadm --wait /dev/md10
md_state raid10 /dev/md10
rec raid10-scan mdadm --detail --scan
rec raid10-lsblk lsblk --json --bytes --output $LSBLK_COLUMNS /dev/vda /dev/vdb /dev/vdc /dev/vdd
mdadm --stop /dev/md10
wipe /dev/vda /dev/vdb /dev/vdc /dev/vdd

step udev
# With udevd running, lsblk fills FSTYPE/LABEL/UUID and /dev/disk/by-id appears.
mdadm --create /dev/md1 --level=1 --raid-devices=2 /dev/vda /dev/vdb --run --quiet
mdadm --wait /dev/md1
mkfs.ext4 -q -L pool /dev/md1
mkfs.ext4 -q -L other /dev/vdc
udevd=/lib/systemd/systemd-udevd
if [ -x "$udevd" ]; then
    export SYSTEMD_IGNORE_CHROOT=1
    $udevd --daemon
    udevadm trigger --action=add
    udevadm settle --timeout=20
    rec udev-lsblk lsblk --json --bytes --output $LSBLK_COLUMNS /dev/vda /dev/vdb /dev/vdc /dev/vdd
    rec udev-blkid blkid -p -o export /dev/vda /dev/vdb /dev/vdc /dev/md1 /dev/vdd
    rec udev-mdstat cat /proc/mdstat
    rec udev-by-id sh -c 'for l in /dev/disk/by-id/*; do printf "%s %s\n" "${l##*/}" "$(readlink "$l")"; done'
    udevadm control --exit
fi
mdadm --stop --scan
step done
