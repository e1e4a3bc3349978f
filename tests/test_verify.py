"""The scrub against a real library (SQLite file, blob store, vector store with an hnsw index, previews): each
corruption the test injects is reported by the right check, `repair` fixes exactly what it may, and the next
run is clean or shows exactly the expected damaged state."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bitharbord.index.canonical_vectors import canonicalize
from bitharbord.library import verify
from bitharbord.library.verify_files import Throttle, hash_file
from bitharbord.store.blobs import LocalBlobStore
from tests.verify_support import DIM, Box, Owner, make_box


async def run(box: Box, *, repair: bool = False, owner: Owner | None = None) -> dict[str, Any]:
    report = await verify.verify(box.lib, verify.Options(repair=repair), owner=owner or Owner(box))
    return report.to_dict()


def check(report: dict[str, Any], prefix: str) -> dict[str, Any]:
    found = [c for c in report["checks"] if c["name"].startswith(prefix)]
    assert len(found) == 1, [c["name"] for c in report["checks"]]
    return found[0]


def failing(report: dict[str, Any]) -> dict[str, set[str]]:
    return {c["name"].split(":")[0]: set(c["problems_by_kind"]) for c in report["checks"] if not c["ok"]}


@pytest.fixture
async def box(tmp_path: Path) -> Box:
    return await make_box(tmp_path)


async def test_a_sound_library_is_clean(box: Box) -> None:
    report = await run(box)
    assert report["result"] == "clean", failing(report)
    names = [c["name"] for c in report["checks"]]
    assert names == ["database", "items", "vectors:minilm-l6-v2@384", "ann:minilm-l6-v2@384", "previews", "blobs"]
    assert check(report, "vectors")["counts"] == {"vector_rows": 6, "idmap_rows": 6, "items_with_vectors": 6,
                                                  "items": 6, "pending": 0}
    assert check(report, "ann")["counts"]["count"] == 6
    assert check(report, "blobs")["counts"]["blobs"] == 6
    assert report["bytes_hashed"] == sum((box.lib.media_root / p).stat().st_size for p in box.items.values())
    assert (await verify.last_report(box.lib) or {})["id"] == report["id"]


async def test_flipped_byte_is_quarantined_and_the_item_marked_damaged(box: Box) -> None:
    blob = box.lib.media_root / box.items[3]
    data = bytearray(blob.read_bytes())
    data[1000] ^= 0x01
    blob.write_bytes(bytes(data))
    report = await run(box)
    assert failing(report) == {"blobs": {"blob_mismatch"}}
    problem = check(report, "blobs")["problems"][0]
    assert problem["item"] == 3 and problem["path"] == box.items[3] and problem["repaired"] is None
    assert blob.exists()  # a check alone changes nothing

    repaired = await run(box, repair=True)
    assert repaired["result"] == "repaired"
    moved = box.lib.quarantine / box.items[3]
    assert not blob.exists() and moved.read_bytes() == bytes(data)  # moved, never deleted
    assert box.sql("SELECT id FROM media_core WHERE damaged IS NOT NULL") == [(3,)]

    after = await run(box)
    assert after["result"] == "damaged" and after["problems"] == 0, failing(after)
    assert [d["item"] for d in after["damaged_items"]] == [3]
    assert box.sql("SELECT count(*) FROM media_core") == [(6,)]  # no item deleted


async def test_deleted_blob_is_reported_by_items_and_marked_damaged(box: Box) -> None:
    (box.lib.media_root / box.items[2]).unlink()
    report = await run(box)
    assert failing(report) == {"items": {"blob_missing"}}
    assert check(report, "items")["problems"][0]["item"] == 2
    await run(box, repair=True)
    after = await run(box)
    assert after["result"] == "damaged" and after["problems"] == 0
    assert box.sql("SELECT damaged FROM media_core WHERE id = 2")[0][0].startswith("blob missing")


async def test_orphan_blob_is_reported_and_kept(box: Box, tmp_path: Path) -> None:
    stray = tmp_path / "stray.jpg"
    stray.write_bytes(b"nobody's photo" * 1000)
    stored = LocalBlobStore(box.lib.media_root).put(stray, "personal")
    report = await run(box)
    assert failing(report) == {"items": {"orphan_blob"}}
    assert check(report, "items")["problems"][0]["path"] == stored.relpath
    again = await run(box, repair=True)
    assert failing(again) == {"items": {"orphan_blob"}}  # not something a repair may touch
    assert stored.path.exists()


async def test_deleted_row_shows_as_orphan_blob_and_orphan_vector(box: Box) -> None:
    box.sql("DELETE FROM ingest_jobs WHERE media_id = 4")
    box.sql("DELETE FROM media_core WHERE id = 4")  # (ON DELETE CASCADE takes its idmap row)
    report = await run(box)
    assert failing(report) == {"items": {"orphan_blob"}, "vectors": {"orphan_vector"}}
    await run(box, repair=True)
    after = await run(box)
    assert failing(after) == {"items": {"orphan_blob"}}  # the vector row is tombstoned; the blob kept
    assert (box.lib.media_root / box.items[4]).exists()


async def test_deleted_row_without_foreign_keys_is_a_foreign_key_violation(box: Box) -> None:
    box.sql("DELETE FROM media_core WHERE id = 5", fk=False)
    report = await run(box)
    assert failing(report)["database"] == {"foreign_key"}
    assert "idmap_orphan" in failing(report)["vectors"]


async def test_every_vector_overwritten_with_one_is_wrong_and_duplicate(box: Box) -> None:
    one = canonicalize(np.ones(DIM))[0].tobytes()
    path = box.store_dir / "vectors.fp32"
    path.write_bytes(one * (path.stat().st_size // len(one)))
    report = await run(box)
    kinds = failing(report)["vectors"]
    assert kinds == {"vector_wrong"}  # each item's bytes changed (listed once per item, wrong before duplicate)
    assert check(report, "vectors")["problem_count"] == 6
    await run(box, repair=True)
    assert sorted(r[0] for r in box.sql("SELECT media_id FROM embed_queue WHERE attempts = 0")) == list(range(1, 7))


async def test_duplicate_vectors_of_different_documents(box: Box) -> None:
    # the hashes recorded in idmap follow the overwrite (as when a store's rows were appended twice over)
    from bitharbord.index.canonical_vectors import vector_hash

    one = canonicalize(np.ones(DIM))[0]
    path = box.store_dir / "vectors.fp32"
    path.write_bytes(one.tobytes() * (path.stat().st_size // len(one.tobytes())))
    box.sql("UPDATE idmap SET vector_hash = ?", (vector_hash(one),))
    report = await run(box)
    assert failing(report)["vectors"] == {"duplicate_vector"}
    await run(box, repair=True)
    assert len(box.sql("SELECT media_id FROM embed_queue")) == 6


async def test_removed_idmap_row_leaves_an_orphan_vector_that_repair_tombstones(box: Box) -> None:
    box.sql("DELETE FROM idmap WHERE media_id = 2")
    report = await run(box)
    assert failing(report) == {"vectors": {"orphan_vector"}}
    assert check(report, "vectors")["counts"]["pending"] == 1  # the worker embeds item 2 again by itself
    await run(box, repair=True)
    after = await run(box)
    assert "vectors" not in failing(after)


async def test_missing_preview_is_queued_again(box: Box) -> None:
    thumb = box.sql("SELECT thumbnail FROM media_core WHERE id = 6")[0][0]
    assert isinstance(thumb, str)
    (box.lib.index_root / thumb).unlink()
    report = await run(box)
    assert failing(report) == {"previews": {"preview_missing"}}
    await run(box, repair=True)
    assert box.sql("SELECT media_id, reason FROM ingest_jobs WHERE stage = 'cataloged'") == [(6, "verify")]
    after = await run(box)
    assert "previews" not in failing(after)  # being made: not reported again meanwhile


@pytest.mark.parametrize("how", ["flipped", "truncated"])
async def test_corrupted_ann_index_is_found_and_rebuilt(box: Box, how: str) -> None:
    graph = next(box.store_dir.glob("ann/gen-*/all/hnsw.bin"))
    data = graph.read_bytes()
    half = len(data) // 2
    graph.write_bytes(data[:half] + bytes(b ^ 0xFF for b in data[half:half + 4096]) + data[half + 4096:]
                      if how == "flipped" else data[:half])
    report = await run(box)
    assert set(failing(report)) == {"ann"}, failing(report)
    repaired = await run(box, repair=True)
    assert check(repaired, "ann")["repaired"] >= 1
    after = await run(box)
    assert after["result"] == "clean", failing(after)


async def test_rate_limit_and_bad_rates(tmp_path: Path, box: Box) -> None:
    for bad in (0, -1, float("nan"), "fast", True):
        with pytest.raises(verify.BadRequest):
            verify.check_rate(bad)
    with pytest.raises(verify.BadRequest):
        await verify.verify(box.lib, verify.Options(rate=0))
    f = tmp_path / "two-mb"
    f.write_bytes(os.urandom(2_000_000))
    import time

    t0 = time.monotonic()
    hash_file(f, Throttle(4e6))  # 2 MB at 4 MB/s: about half a second
    took = time.monotonic() - t0
    assert took >= 0.4, took


async def test_no_database_is_not_ready(tmp_path: Path) -> None:
    with pytest.raises(verify.NotReady):
        await verify.verify(verify.Library(tmp_path / "m", tmp_path / "i"), verify.Options())


@pytest.mark.parametrize(("verify_yaml", "message"), [
    ("{window: '25:00-01:00'}", "HH:MM-HH:MM"), ("{window: '01:00-01:00'}", "empty"),
    ("{rate: 0}", "greater than 0"), ("{rate: -1}", "greater than 0"), ("{interval: -5}", "greater than or equal"),
])
def test_bad_verify_config_names_the_field(verify_yaml: str, message: str) -> None:
    from bitharbord.config import ConfigError, parse
    from tests.conftest import harbor_text

    with pytest.raises(ConfigError) as err:
        parse(harbor_text(Path("/box"), f"  verify: {verify_yaml}\n"), "harbor.yaml")
    assert "library.verify" in str(err.value) and message in str(err.value), str(err.value)


def test_schedule_window() -> None:
    from datetime import datetime

    from bitharbord.library.verify_service import in_window

    assert in_window("01:00-05:00", datetime(2026, 1, 1, 3, 0))
    assert not in_window("01:00-05:00", datetime(2026, 1, 1, 5, 0))
    assert in_window("22:00-04:00", datetime(2026, 1, 1, 23, 30)) and in_window("22:00-04:00", datetime(2026, 1, 1, 1))
    assert not in_window("22:00-04:00", datetime(2026, 1, 1, 12, 0))


async def test_unreadable_database_is_damage_not_a_crash(box: Box) -> None:
    raw = bytearray(box.lib.db_path.read_bytes())
    raw[:16] = b"not a database!!"
    box.lib.db_path.write_bytes(bytes(raw))
    with pytest.raises(verify.DatabaseDamaged, match="SQLite cannot read it"):
        await run(box)


async def test_a_damaged_item_whose_blob_is_restored_is_whole_again(box: Box) -> None:
    blob = box.lib.media_root / box.items[5]
    good = blob.read_bytes()
    blob.write_bytes(good[:-1] + b"?")
    await run(box, repair=True)
    assert box.sql("SELECT id FROM media_core WHERE damaged IS NOT NULL") == [(5,)]
    blob.write_bytes(good)  # the owner restores the file from a backup
    healed = await run(box, repair=True)
    assert healed["result"] == "clean" and "no longer damaged" in check(healed, "blobs")["note"]
    assert box.sql("SELECT id FROM media_core WHERE damaged IS NOT NULL") == []
    assert (await run(box))["result"] == "clean"


async def test_a_photo_without_a_recorded_thumbnail_is_queued_unless_ingest_gave_up(box: Box) -> None:
    box.sql("UPDATE media_core SET thumbnail = NULL WHERE id IN (1, 2)")
    box.sql("UPDATE ingest_jobs SET warning = 'no preview: not an image Pillow can read' WHERE media_id = 2")
    report = await run(box)
    assert failing(report) == {"previews": {"preview_not_recorded"}}
    assert [p["item"] for p in check(report, "previews")["problems"]] == [1]
    await run(box, repair=True)
    assert box.sql("SELECT media_id FROM ingest_jobs WHERE stage = 'cataloged'") == [(1,)]
