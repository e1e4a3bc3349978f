"""A throwaway QEMU VM for tests that need a real kernel feature the host lacks (md RAID).

The host kernel has no md driver, so mdadm cannot be tested here. This harness boots Debian's
`linux-image-6.1.0-*-amd64` kernel under qemu-system-x86_64 (TCG, no KVM) with a tiny busybox
initramfs that loads the md/raid/virtio/9p/overlay modules, mounts the host's root file system
read-only over 9p (plus a tmpfs overlay, so host binaries such as mdadm and python3 run in a chroot),
attaches N sparse raw disks as /dev/vda, /dev/vdb, ... and runs one shell script.

    image = ensure_image()                     # builds once, cached (see cache_dir())
    result = run_script("mdadm --version", disks=[64, 64])
    result.output                              # what the script printed (stdout+stderr)
    result.read("detail.txt")                  # a file the script wrote to $OUT (/bitharbor/out)

Inside the VM the script runs as root in the chroot, with:
    $OUT      a directory (9p, read-write) whose files come back as `result.read(name)`
    /dev/vdX  the disks, in the order given (virtio serials bhdisk0, bhdisk1, ...)

Building needs, once: qemu-system-x86_64, a static /bin/busybox (Debian busybox-static), mdadm on the
host (it is run from the host root), dpkg-deb and apt-get (to download the kernel package). When the
tools are missing and we are root, `ensure_tools()` runs
`apt-get install -y --no-install-recommends qemu-system-x86 busybox-static mdadm` (set
BITHARBOR_VM_NO_INSTALL=1 to forbid that). The kernel .deb is fetched with `apt-get download`, or taken
from $BITHARBOR_VM_KERNEL_DEB. Cache: $BITHARBOR_VM_CACHE or ~/.cache/bitharbor-vm.

Run by hand:  python tests/vm/harness.py --build        (warm the cache)
              python tests/vm/harness.py script.sh [--disks 64,64]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# Modules we want; their dependencies are added from each .ko's own `depends=` (.modinfo).
WANTED_MODULES = ("virtio_pci", "virtio_blk", "9pnet_virtio", "9p", "overlay",
                  "md_mod", "raid0", "raid1", "raid10", "ext4", "crc32c_generic")
APT_PACKAGES = ("qemu-system-x86", "busybox-static", "mdadm")
BEGIN = "==BITHARBOR-VM-BEGIN=="
END_RE = re.compile(r"==BITHARBOR-VM-END rc=(-?\d+)==")
FAIL_RE = re.compile(r"==BITHARBOR-VM-FAIL (.*)==")
HARNESS_VERSION = "3"  # bump to force an initramfs rebuild

Log = Callable[[str], None]


class VMUnavailable(RuntimeError):
    """The VM cannot be built here (tools missing and not installable)."""


class VMError(RuntimeError):
    """The VM was built but did not boot or did not finish the script."""

    def __init__(self, message: str, console: str = "") -> None:
        tail = "\n".join(console.splitlines()[-40:])
        super().__init__(f"{message}\n--- last console lines ---\n{tail}" if console else message)
        self.console = console


@dataclass(frozen=True)
class VMImage:
    kernel: Path
    initrd: Path
    kernel_version: str
    modules: tuple[str, ...]  # load order


@dataclass(frozen=True)
class VMResult:
    output: str  # the script's stdout+stderr, exactly as written to the shared directory
    returncode: int
    console: str  # the whole serial console (kernel + init), CRLF normalised
    boot_seconds: float  # qemu start -> script start
    total_seconds: float
    out_dir: Path  # the host side of $OUT

    def read(self, name: str) -> str:
        path = self.out_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"the VM script did not write $OUT/{name} (looked in {path})")
        return path.read_text(encoding="utf-8", errors="surrogateescape")


def _log(msg: str) -> None:
    print(f"[vm] {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    env = os.environ.get("BITHARBOR_VM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bitharbor-vm"


# --------------------------------------------------------------------------- host tools


def _busybox_path() -> Path | None:
    for cand in ("/bin/busybox", "/usr/bin/busybox"):
        p = Path(cand)
        if p.is_file() and _is_static_elf(p.read_bytes()):
            return p
    return None


def _is_static_elf(data: bytes) -> bool:
    """True when an ELF64 executable has no PT_INTERP (no dynamic loader needed)."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        p_type, = struct.unpack_from("<I", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def missing_tools() -> list[str]:
    missing = []
    if shutil.which("qemu-system-x86_64") is None:
        missing.append("qemu-system-x86")
    if _busybox_path() is None:
        missing.append("busybox-static")
    if shutil.which("mdadm") is None and not Path("/usr/sbin/mdadm").exists() and not Path("/sbin/mdadm").exists():
        missing.append("mdadm")
    return missing


def ensure_tools(*, install: bool | None = None, log: Log = _log) -> None:
    """Make sure qemu, a static busybox and mdadm are on the host; apt-get them as root if allowed."""
    missing = missing_tools()
    if not missing:
        return
    if install is None:
        install = os.geteuid() == 0 and not os.environ.get("BITHARBOR_VM_NO_INSTALL")
    if not install:
        raise VMUnavailable(
            "the VM needs Debian packages " + " ".join(missing)
            + " (apt-get install -y --no-install-recommends " + " ".join(APT_PACKAGES) + ")"
        )
    log("installing " + " ".join(missing) + " with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=600",
           *APT_PACKAGES]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:  # the package lists may be missing on a fresh machine
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True)
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0 or missing_tools():
        raise VMUnavailable(f"apt-get install {' '.join(APT_PACKAGES)} failed: {res.stderr.strip()[-500:]}")


# --------------------------------------------------------------------------- the kernel package


def _kernel_package_name() -> str:
    """linux-image-6.1.0-N-amd64 as the distribution's linux-image-amd64 meta package points to."""
    res = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True)
    m = re.search(r"Depends:\s*(linux-image-[0-9][^\s]*-amd64)", res.stdout)
    if m:
        return m.group(1)
    res = subprocess.run(["apt-cache", "search", "--names-only", r"^linux-image-6\.1\.0-[0-9]+-amd64$"],
                         capture_output=True, text=True)
    abi = re.compile(r"linux-image-6\.1\.0-(\d+)-amd64")
    names = sorted((m.group(0) for m in map(abi.match, res.stdout.split()) if m),
                   key=lambda n: int(abi.fullmatch(n).group(1)))  # type: ignore[union-attr]
    if not names:
        raise VMUnavailable("no linux-image-*-amd64 package known to apt (run apt-get update)")
    return names[-1]


def _download_kernel_deb(dest: Path, log: Log) -> Path:
    env_deb = os.environ.get("BITHARBOR_VM_KERNEL_DEB")
    if env_deb:
        return Path(env_deb)
    name = _kernel_package_name()
    log(f"apt-get download {name}")
    dest.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["apt-get", "download", name], cwd=dest, capture_output=True, text=True)
    if res.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True)
        res = subprocess.run(["apt-get", "download", name], cwd=dest, capture_output=True, text=True)
    debs = sorted(dest.glob(f"{name}_*.deb"))
    if res.returncode != 0 or not debs:
        raise VMUnavailable(f"apt-get download {name} failed: {res.stderr.strip()[-500:]}")
    return debs[-1]


def _iter_deb_members(deb: Path) -> Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]:
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|*") as tar:
            for member in tar:
                yield member, tar
    finally:
        proc.stdout.close()
        proc.wait()
    if proc.returncode not in (0, -13):  # -13: we stopped reading early (SIGPIPE)
        raise VMUnavailable(f"dpkg-deb --fsys-tarfile {deb} exited {proc.returncode}")


def _module_name(path: str) -> str:
    return re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", "", Path(path).name).replace("-", "_")


def _is_module(name: str) -> bool:
    return "/kernel/" in name and re.search(r"\.ko(\.xz|\.gz)?$", name) is not None


def _module_bytes(name: str, data: bytes) -> bytes:
    """Modules are plain .ko in Debian 12; later releases compress them (busybox insmod wants them plain)."""
    if name.endswith(".xz"):
        return lzma.decompress(data)
    if name.endswith(".gz"):
        return gzip.decompress(data)
    return data


def modinfo(data: bytes) -> dict[str, str]:
    """The key=value strings of an ELF64 kernel module's .modinfo section (first value per key)."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError("not an ELF64 kernel module")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        base = shoff + i * shentsize
        name, = struct.unpack_from("<I", data, base)
        offset, size = struct.unpack_from("<QQ", data, base + 0x18)
        return name, offset, size

    _, stroff, _ = section(shstrndx)
    info: dict[str, str] = {}
    for i in range(shnum):
        name_off, offset, size = section(i)
        end = data.index(b"\0", stroff + name_off)
        if data[stroff + name_off:end] == b".modinfo":
            for item in data[offset:offset + size].split(b"\0"):
                key, sep, value = item.decode(errors="replace").partition("=")
                if sep and key not in info:
                    info[key] = value
    return info


def _resolve_modules(depends: dict[str, list[str]], wanted: Sequence[str]) -> list[str]:
    """Dependency-first load order of `wanted` and everything they depend on."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise VMUnavailable(f"module dependency cycle at {name}")
        state[name] = 1
        for dep in depends.get(name, []):
            visit(dep)
        state[name] = 2
        order.append(name)

    for name in wanted:
        if name in depends:  # absent = built into the kernel
            visit(name)
    return order


def _extract_kernel(deb: Path, dest: Path, log: Log) -> tuple[str, list[str]]:
    """Write dest/vmlinuz and dest/mods/<name>.ko; return (kernel version, module load order)."""
    log(f"reading module dependencies from {deb.name}")
    depends: dict[str, list[str]] = {}
    paths: dict[str, str] = {}
    kver = ""
    for member, tar in _iter_deb_members(deb):
        if member.isfile() and _is_module(member.name):
            f = tar.extractfile(member)
            assert f is not None
            info = modinfo(_module_bytes(member.name, f.read()))
            name = _module_name(member.name)
            depends[name] = [d.replace("-", "_") for d in info.get("depends", "").split(",") if d]
            paths[name] = member.name
        elif member.isfile() and re.search(r"/boot/vmlinuz-", member.name):
            kver = member.name.rsplit("vmlinuz-", 1)[1]
    if not kver:
        raise VMUnavailable(f"{deb} has no /boot/vmlinuz-*")
    order = _resolve_modules(depends, WANTED_MODULES)
    need = {paths[n]: n for n in order}
    log(f"kernel {kver}: extracting vmlinuz and {len(order)} modules")
    (dest / "mods").mkdir(parents=True, exist_ok=True)
    for member, tar in _iter_deb_members(deb):
        if member.name in need or member.name.endswith(f"/boot/vmlinuz-{kver}"):
            f = tar.extractfile(member)
            assert f is not None
            if member.name in need:
                (dest / "mods" / f"{need[member.name]}.ko").write_bytes(_module_bytes(member.name, f.read()))
            else:
                (dest / "vmlinuz").write_bytes(f.read())
    (dest / "mods" / "order").write_text("\n".join(order) + "\n")
    return kver, order


# --------------------------------------------------------------------------- the initramfs

INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
fail() { echo "==BITHARBOR-VM-FAIL $*=="; poweroff -f; }
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
for m in $(cat /mods/order); do insmod /mods/$m.ko || echo "insmod $m failed"; done
mkdir -p /host /ovl /newroot /work
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /host || fail 9p-hostroot
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 work /work || fail 9p-work
mount -t tmpfs t /ovl
mkdir -p /ovl/u /ovl/w
mount -t overlay overlay -o lowerdir=/host,upperdir=/ovl/u,workdir=/ovl/w /newroot || fail overlay
for d in proc sys dev; do mount --bind /$d /newroot/$d; done
# /tmp stays the host's (read through the overlay, writes land in its tmpfs upper dir): a checkout or venv
# under /tmp (CI clones anywhere) must be visible to the scripts that run the project's code.
mount -t tmpfs t /newroot/run
mkdir -p /newroot/bitharbor
mount --bind /work /newroot/bitharbor
hostname bitharbor-vm
echo "$BEGIN"
( chroot /newroot /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LC_ALL=C OUT=/bitharbor/out /bin/sh -c 'cd /; exec /bin/sh /bitharbor/script.sh' \
    > /work/output 2>&1; echo $? > /work/rc )
cat /work/output
echo "==BITHARBOR-VM-END rc=$(cat /work/rc)=="
sync
poweroff -f
""".replace("$BEGIN", BEGIN)


def _cpio_newc(entries: Sequence[tuple[str, int, bytes, int, int]]) -> bytes:
    """A newc cpio archive of (name, mode, data, rdevmajor, rdevminor) entries, owned by root."""
    out = io.BytesIO()

    def put(ino: int, name: str, mode: int, data: bytes, rmaj: int, rmin: int) -> None:
        nameb = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rmaj, rmin, len(nameb), 0)
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.write(nameb + b"\0" * (-(110 + len(nameb)) % 4))
        out.write(data + b"\0" * (-len(data) % 4))

    for ino, (name, mode, data, rmaj, rmin) in enumerate(entries, start=1):
        put(ino, name, mode, data, rmaj, rmin)
    put(0, "TRAILER!!!", 0, b"", 0, 0)
    return out.getvalue()


def _build_initrd(kdir: Path, order: Sequence[str], busybox: Path) -> bytes:
    d, f, x = 0o040755, 0o100644, 0o100755
    entries: list[tuple[str, int, bytes, int, int]] = [
        (name, d, b"", 0, 0) for name in ("bin", "dev", "proc", "sys", "tmp", "mods", "host", "work")
    ]
    entries.append(("dev/console", 0o020600, b"", 5, 1))
    entries.append(("bin/busybox", x, busybox.read_bytes(), 0, 0))
    entries.append(("init", x, INIT.encode(), 0, 0))
    entries.append(("mods/order", f, ("\n".join(order) + "\n").encode(), 0, 0))
    for name in order:
        entries.append((f"mods/{name}.ko", f, (kdir / "mods" / f"{name}.ko").read_bytes(), 0, 0))
    return gzip.compress(_cpio_newc(entries), compresslevel=6, mtime=0)


def ensure_image(*, install: bool | None = None, log: Log = _log) -> VMImage:
    """Build (once) and return the kernel + initramfs. Cached under cache_dir()."""
    ensure_tools(install=install, log=log)
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    wanted = ",".join(WANTED_MODULES)
    kernels = sorted(p.parent for p in root.glob("*/kernel.ok")
                     if p.read_text().splitlines()[1:2] == [wanted])
    if kernels and not os.environ.get("BITHARBOR_VM_KERNEL_DEB"):
        kdir = kernels[-1]
    else:
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            deb = _download_kernel_deb(Path(tmp), log)
            staging = Path(tmp) / "k"
            kver, _ = _extract_kernel(deb, staging, log)
            kdir = root / kver
            if kdir.exists():
                shutil.rmtree(kdir)
            staging.rename(kdir)
            (kdir / "kernel.ok").write_text(f"{kver}\n{wanted}\n")
    kver = (kdir / "kernel.ok").read_text().splitlines()[0]
    order = [m for m in (kdir / "mods" / "order").read_text().split() if m]
    busybox = _busybox_path()
    assert busybox is not None
    key = hashlib.sha256(
        "\0".join([HARNESS_VERSION, INIT, *order, hashlib.sha256(busybox.read_bytes()).hexdigest()]).encode()
    ).hexdigest()[:16]
    initrd = kdir / f"initrd-{key}.gz"
    if not initrd.exists():
        log(f"building initramfs {initrd.name}")
        tmp_initrd = initrd.with_suffix(".tmp")
        tmp_initrd.write_bytes(_build_initrd(kdir, order, busybox))
        tmp_initrd.rename(initrd)
        for old in kdir.glob("initrd-*.gz"):
            if old != initrd:
                old.unlink()
    return VMImage(kernel=kdir / "vmlinuz", initrd=initrd, kernel_version=kver, modules=tuple(order))


# --------------------------------------------------------------------------- running


def run_script(
    script: str,
    *,
    disks: Sequence[int] = (64, 64, 64, 64),
    workdir: Path | None = None,
    memory_mib: int = 1024,
    cpus: int = 2,
    timeout: float = 300.0,
    image: VMImage | None = None,
    log: Log = _log,
) -> VMResult:
    """Boot the VM with sparse raw disks of the given sizes (MiB), run `script` (sh) as root, power off.

    Raises VMError when the VM does not boot, the 9p/overlay setup fails, or `timeout` passes.
    A non-zero exit of the script is not an error: see `returncode`."""
    image = image or ensure_image(log=log)
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="bitharbor-vm-"))
    share = workdir / "share"
    (share / "out").mkdir(parents=True, exist_ok=True)
    (share / "script.sh").write_text(script)
    for stale in ("output", "rc"):
        (share / stale).unlink(missing_ok=True)
    argv = [
        "qemu-system-x86_64", "-machine", "q35,accel=tcg", "-cpu", "max", "-m", str(memory_mib),
        "-smp", str(cpus), "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
        "-monitor", "none", "-no-reboot",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd),
        "-append", "console=ttyS0 panic=-1 quiet loglevel=3 mitigations=off",
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={share},mount_tag=work,security_model=none,multidevs=remap",
    ]
    for i, size in enumerate(disks):
        img = workdir / f"disk{i}.img"
        with open(img, "wb") as fh:
            fh.truncate(size * 1024 * 1024)
        argv += ["-drive", f"file={img},format=raw,if=none,id=d{i},cache=unsafe",
                 "-device", f"virtio-blk-pci,drive=d{i},serial=bhdisk{i}"]
    started = time.monotonic()
    log(f"booting {image.kernel_version} with {len(disks)} disk(s); work dir {workdir}")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    chunks: list[bytes] = []
    begun: list[float] = []

    def reader() -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            chunks.append(line)
            if not begun and BEGIN.encode() in line:
                begun.append(time.monotonic())

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        thread.join(5)
        console = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
        raise VMError(f"the VM did not finish within {timeout:.0f}s", console) from None
    thread.join(5)
    total = time.monotonic() - started
    console = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    if m := FAIL_RE.search(console):
        raise VMError(f"VM setup failed: {m.group(1)}", console)
    end = END_RE.search(console)
    if not begun or end is None:
        raise VMError(f"the VM exited ({proc.returncode}) without finishing the script", console)
    output_file = share / "output"
    if output_file.is_file():
        output = output_file.read_text(encoding="utf-8", errors="surrogateescape")
    else:  # fall back to the console copy between the markers
        output = console.split(BEGIN, 1)[1][: end.start() - console.index(BEGIN) - len(BEGIN)].lstrip("\n")
    boot = begun[0] - started
    log(f"booted in {boot:.1f}s, finished in {total:.1f}s, script rc={end.group(1)}")
    return VMResult(output=output, returncode=int(end.group(1)), console=console,
                    boot_seconds=boot, total_seconds=total, out_dir=share / "out")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("script", nargs="?", help="shell script to run in the VM")
    ap.add_argument("--build", action="store_true", help="only build/cache the kernel and initramfs")
    ap.add_argument("--disks", default="64,64", help="disk sizes in MiB, comma separated")
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args(argv)
    image = ensure_image()
    print(f"kernel {image.kernel} ({image.kernel_version})\ninitrd {image.initrd}\nmodules {' '.join(image.modules)}")
    if args.build or not args.script:
        return 0
    sizes = [int(s) for s in args.disks.split(",") if s]
    result = run_script(Path(args.script).read_text(), disks=sizes, timeout=args.timeout, image=image)
    sys.stdout.write(result.output)
    print(f"[vm] rc={result.returncode} boot={result.boot_seconds:.1f}s total={result.total_seconds:.1f}s "
          f"out={result.out_dir}", file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
