# Shared by scripts/demo.sh and scripts/test.sh: install what BitHarbor needs, idempotently.
# shellcheck shell=bash

PYTHON=${PYTHON:-python3.11}

# Debian packages the tests and the daemon use (only installed when running as root and missing).
SYSTEM_PACKAGES=(util-linux e2fsprogs ffmpeg fdisk xfsprogs btrfs-progs qemu-system-x86 busybox-static mdadm
  systemd systemd-container prometheus chromium chromium-driver fonts-dejavu-core)

ensure_system_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "note: not root, so not installing: ${missing[*]} (tests that need them will say so)" >&2
    return 0
  fi
  echo "== apt-get install ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ensure_venv DIR SPEC: a venv at DIR with `pip install -e SPEC`; re-installs only when pyproject.toml changed.
ensure_venv() {
  local dir=$1 spec=$2 stamp
  stamp="$dir/.bitharbor-installed"
  if ! command -v "$PYTHON" >/dev/null; then
    echo "error: $PYTHON not found; BitHarbor needs Python 3.11" >&2
    return 1
  fi
  [ -x "$dir/bin/python" ] || "$PYTHON" -m venv "$dir"
  local want
  want="$(sha256sum pyproject.toml | cut -d' ' -f1) $spec"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== installing BitHarbor ($spec) into $dir (a few minutes the first time)"
    # torch is pinned in pyproject.toml to the CPU wheel on local disk; numpy stays at 1.25.0 for diskannpy.
    "$dir/bin/pip" install -q --disable-pip-version-check -e "$spec" 2>&1 | grep -v "^WARNING: Location" || true
    "$dir/bin/python" -c "import bitharbord, bitharborctl" || return 1
    echo "$want" > "$stamp"
  fi
}

# The ImageBind embedder needs torch 2.14.1 + torchvision 0.29.1 (both on local disk for pip), which cannot live
# beside the main venv's torch 2.13.0; its tests run in this second venv. ~2.5 min and 5.7 GB the first time.
ensure_imagebind_venv() {
  local dir=$1 stamp want
  stamp="$dir/.bitharbor-installed"
  want="imagebind-2 $(sha256sum pyproject.toml | cut -d' ' -f1)"
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
  echo "== installing the ImageBind test environment into $dir"
  # torch 2.14.1 is a CUDA build: ~6.5 GB installed plus ~3 GB of wheels while pip unpacks them. Say so plainly
  # rather than dying half-way with ENOSPC (a shared CI disk ran out here once).
  local need_kib=$((10 * 1024 * 1024)) have_kib tmp_kib
  have_kib=$(df -Pk "$(dirname "$(realpath -m "$dir")")" | awk 'NR==2 {print $4}')
  tmp_kib=$(df -Pk "${TMPDIR:-/tmp}" | awk 'NR==2 {print $4}')
  if [ "$have_kib" -lt "$need_kib" ] || [ "$tmp_kib" -lt $((3 * 1024 * 1024)) ]; then
    echo "error: the ImageBind test environment needs ~10 GiB free beside $dir (free: $((have_kib / 1048576)) GiB)" \
      "and ~3 GiB in ${TMPDIR:-/tmp} (free: $((tmp_kib / 1048576)) GiB); free some space and run again" >&2
    return 1
  fi
  [ -x "$dir/bin/python" ] || "$PYTHON" -m venv "$dir"
  # --no-cache-dir: pip's HTTP cache would hold a second copy of the CUDA wheels.
  local pip=("$dir/bin/pip" install -q --disable-pip-version-check --no-cache-dir)
  {
    "${pip[@]}" torch==2.14.1 torchvision==0.29.1 "setuptools<81" ftfy regex timm iopath einops fvcore av
    "${pip[@]}" --no-deps imagebind-unofficial==0.1.1 peachdb-pytorchvideo==0.1.6 torchaudio==2.11.0
    # The daemon's own dependencies (tests/test_embedder_change.py runs the daemon here), except the pins of the
    # main environment: torch (2.14.1 above) and numpy 1.25 for diskannpy (installed without it: hnsw serves here).
    "${pip[@]}" $("$PYTHON" -c 'import tomllib; print(" ".join(d for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"] if not d.startswith(("torch", "diskannpy", "numpy"))))') \
      numpy pytest pytest-timeout pytest-aiohttp
    "${pip[@]}" --no-deps diskannpy==0.7.0
    "${pip[@]}" --no-deps -e .
  } 2>&1 | grep -v "^WARNING: Location" || true
  # Through our loader: imagebind's own import needs the torchvision shim bitharbord.embed.imagebind_setup installs.
  "$dir/bin/python" -c "import torch, torchvision; from bitharbord.embed import imagebind_setup as m; m._install_shims(); import imagebind.models.imagebind_model; from bitharbord.daemon import registered; registered()" || return 1
  echo "$want" > "$stamp"
}
