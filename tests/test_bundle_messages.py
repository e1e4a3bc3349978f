"""What export and import say (issue 13, smaller things): a tampered bundle's file is reported as content that
does not match its hash (not "the source changed after it was hashed"); an export reports what it wrote (not
"0 added, 0 already present"). Real SQLite libraries and real blobs; no daemon needed for the wording."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bitharborctl.commands.bundles import render_export, render_import
from bitharbord.store import bundle, db
from bitharbord.store.blobs import LocalBlobStore
from tests.media import make_jpeg


async def library(root: Path, photos: int) -> tuple[Path, Path]:
    media = root / "media"
    media.mkdir(parents=True)
    path = media / db.DB_NAME
    await db.migrate(path)
    store = LocalBlobStore(media)
    conn = sqlite3.connect(path)
    try:
        for i in range(photos):
            src = make_jpeg(root / "src" / f"IMG_{i}.jpg", color=(30 * i, 40, 50))
            stored = store.put(src, "personal")
            conn.execute("INSERT INTO media_core (type, title, file_hash, blob_path, size, kind) "
                         "VALUES ('personal', ?, ?, ?, ?, 'image')",
                         (f"photo {i}", stored.hexdigest, stored.relpath, stored.size))
        conn.commit()
    finally:
        conn.close()
    return path, media


async def test_a_tampered_bundle_file_does_not_match_its_hash(tmp_path: Path) -> None:
    path, media = await library(tmp_path / "a", 2)
    out = tmp_path / "bundle"
    report = bundle.export(path, media, out)
    assert (report.items, report.failed) == (2, [])
    victim = sorted((out / "blobs").rglob("*.jpg"))[0]
    data = bytearray(victim.read_bytes())
    data[-10] ^= 0xFF
    victim.write_bytes(bytes(data))

    target_db, target_media = await library(tmp_path / "b", 0)
    got = bundle.import_bundle(out, target_db, target_media)
    assert (got.added, len(got.failed)) == (1, 1)
    [failure] = got.failed
    assert failure["hash"] == victim.stem
    assert "content does not match its hash" in failure["error"] and str(victim) in failure["error"]
    assert "recorded in the bundle" in failure["error"]
    assert "changed after it was hashed" not in failure["error"]


async def test_a_damaged_library_blob_is_named_on_export(tmp_path: Path) -> None:
    path, media = await library(tmp_path / "a", 1)
    blob = next((media / "personal").rglob("*.jpg"))
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x00")
    report = bundle.export(path, media, tmp_path / "bundle")
    [failure] = report.failed
    assert "content does not match its hash" in failure["error"] and "recorded in the library" in failure["error"]


@pytest.mark.parametrize("references_only", [False, True])
async def test_export_says_what_it_wrote(tmp_path: Path, references_only: bool) -> None:
    path, media = await library(tmp_path / "a", 3)
    dest = tmp_path / "bundle"
    report = bundle.export(path, media, dest, blobs=not references_only).to_dict()
    text = render_export(report, str(dest), references_only)
    assert "added" not in text and "already present" not in text
    if references_only:
        assert text == f"exported: 3 item(s) to {dest}, media not copied (the bundle refers to this box's media root)"
    else:
        assert text == f"exported: 3 item(s) to {dest}, {report['blobs_bytes']} bytes of media copied"
        assert report["blobs_bytes"] > 0


def test_import_says_what_it_added() -> None:
    report = {"items": 3, "added": 1, "already_present": 2, "failed": [], "blobs_bytes": 12}
    assert render_import(report) == ("imported: 3 item(s) in the bundle, 1 added, 2 already present, 0 failed, "
                                     "12 bytes of media")
