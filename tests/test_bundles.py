"""Export a real library (ingested by the real daemon) and import it on another box: rows, blobs, hashes,
idempotency, a corrupt blob refused, a references-only bundle."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import harbor_text
from tests.media import make_jpeg
from tests.test_e2e import Harbord


def db_of(d: Harbord) -> Path:
    return d.state / "root" / "box" / "media" / "bitharbor.db"


def rows(d: Harbord) -> dict[str, tuple[str, str]]:
    conn = sqlite3.connect(f"file:{db_of(d)}?mode=ro", uri=True)
    try:
        return {h: (t, p) for h, t, p in conn.execute("SELECT file_hash, type, blob_path FROM media_core")}
    finally:
        conn.close()


def box(tmp: Path, name: str) -> Harbord:
    (tmp / name).mkdir()
    d = Harbord(tmp / name, http=False).start()
    cfg = tmp / name / "harbor.yaml"
    cfg.write_text(harbor_text(Path("/box")))
    out = d.ctl("apply", "-f", str(cfg))
    assert out.returncode == 0, out.stdout + out.stderr
    return d


@pytest.fixture
def source(tmp_path: Path) -> Harbord:
    d = box(tmp_path, "a")
    inbox = d.state / "root" / "box" / "inbox"
    for i in range(3):
        make_jpeg(inbox / f"IMG_{i}.jpg", color=(40 * i, 90, 200 - 30 * i), label=f"photo {i}")
    (inbox / "copy.jpg").write_bytes((inbox / "IMG_0.jpg").read_bytes())  # a duplicate: one item
    deadline = time.monotonic() + 120
    while len(rows(d) if db_of(d).exists() else {}) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(rows(d)) == 3, d.log.read_text()[-3000:]
    yield d
    d.stop()


def test_export_then_import_is_exact_and_idempotent(source: Harbord, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    out = source.ctl("export", "--to", str(bundle))
    assert out.returncode == 0, out.stderr
    assert "exported: 3 item(s)" in out.stdout
    manifest = json.loads((bundle / "bitharbor-bundle.json").read_text())
    assert manifest["items"] == 3 and manifest["blobs"] == "included"
    assert len(list((bundle / "blobs").rglob("*.jpg"))) == 3
    again = source.ctl("export", "--to", str(bundle))
    assert again.returncode == 1 and "not empty" in again.stderr

    target = box(tmp_path, "b")
    try:
        imported = target.ctl("import", "--from", str(bundle), "-o", "json")
        assert imported.returncode == 0, imported.stderr
        assert json.loads(imported.stdout)["added"] == 3
        before, after = rows(source), rows(target)
        assert set(before) == set(after)
        for digest, (kind, rel) in after.items():
            blob = db_of(target).parent / rel
            assert blob.read_bytes() == (db_of(source).parent / before[digest][1]).read_bytes()
            assert kind == "personal"
        conn = sqlite3.connect(f"file:{db_of(target)}?mode=ro", uri=True)
        assert conn.execute("SELECT count(*) FROM personal_media").fetchone()[0] == 3
        conn.close()
        twice = target.ctl("import", "--from", str(bundle))
        assert twice.returncode == 0 and "0 added, 3 already present" in twice.stdout
        assert rows(target) == after
    finally:
        target.stop()


def test_corrupt_blob_is_refused_and_references_only(source: Harbord, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    assert source.ctl("export", "--to", str(bundle)).returncode == 0
    victim = sorted((bundle / "blobs").rglob("*.jpg"))[0]
    data = bytearray(victim.read_bytes())
    data[-10] ^= 0xFF
    victim.write_bytes(bytes(data))
    refs = tmp_path / "refs"
    out = source.ctl("export", "--to", str(refs), "--references-only")
    assert out.returncode == 0 and not (refs / "blobs").exists()

    target = box(tmp_path, "c")
    try:
        bad = target.ctl("import", "--from", str(bundle))
        assert bad.returncode == 1
        assert "2 added" in bad.stdout and "1 failed" in bad.stdout
        assert victim.name[:16] in bad.stderr and "hash" in bad.stderr.lower()
        assert victim.stem not in rows(target)  # the corrupt one is not in the library
        fixed = target.ctl("import", "--from", str(refs))  # the same items, read from box a's media root
        assert fixed.returncode == 0 and "1 added, 2 already present" in fixed.stdout
        assert set(rows(target)) == set(rows(source))
    finally:
        target.stop()


def test_incomplete_bundle_is_refused(source: Harbord, tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "items.jsonl").write_text("")
    out = source.ctl("import", "--from", str(tmp_path / "half"))
    assert out.returncode == 1 and "not a complete BitHarbor bundle" in out.stderr
