#!/usr/bin/env bash
# Install everything the tests need, then lint, type-check and run the whole test suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k config`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_system_packages "${SYSTEM_PACKAGES[@]}"
ensure_venv .venv '.[test]'
echo "== the mdadm test VM (kernel + initramfs, cached)"; sh scripts/vm-prepare.sh
echo "== ruff";  .venv/bin/ruff check bitharbord bitharborctl tests bench
echo "== mypy --strict"; .venv/bin/mypy bitharbord bitharborctl
echo "== layers (import-linter: .importlinter)"; .venv/bin/lint-imports .importlinter --no-cache
echo "== pytest"
.venv/bin/pytest -q -p no:cacheprovider "$@"
if [ $# -eq 0 ]; then
  # The ImageBind embedder, for real, in its own environment (see README: ImageBind).
  ensure_imagebind_venv .venv-imagebind
  echo "== pytest (ImageBind environment)"
  .venv-imagebind/bin/python -m pytest -q -p no:cacheprovider tests/test_embed_imagebind.py tests/test_embedder_change.py
fi
