"""The append-only vector store: canonical form, hashing, crash safety, tombstones, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from bitharbord.index.canonical_vectors import canonicalize, vector_hash
from bitharbord.index.vector_files import MANIFEST, TOMBSTONES, TYPES, VECTORS, EmbedderMismatch, VectorStoreError
from bitharbord.index.vectors import VectorStore

DIM = 8

Arr = npt.NDArray[Any]


def rand(n: int, seed: int = 0, dim: int = DIM) -> Arr:
    return np.random.default_rng(seed).normal(size=(n, dim))


def open_store(root: Path, **kw: object) -> VectorStore:
    return VectorStore.open(root, embedder="test-embedder", dim=DIM, **kw)  # type: ignore[arg-type]


# -- canonical form ----------------------------------------------------------------------------------------


def test_canonical_rows_are_unit_rounded_float32() -> None:
    x = rand(50) * 7.5
    c = canonicalize(x)
    assert c.dtype == np.dtype("<f4") and c.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(c.astype(np.float64), axis=1), 1.0, atol=1e-5)
    # rounded to 6 decimals: scaling by 1e6 gives integers up to float32 precision
    scaled = c.astype(np.float64) * 1e6
    np.testing.assert_allclose(scaled, np.round(scaled), atol=0.1)


def test_hash_ignores_scale_and_sign_of_zero_but_not_content() -> None:
    v = np.array([0.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    w = v.copy()
    w[0] = -0.0
    h = vector_hash(canonicalize(v)[0])
    assert h == vector_hash(canonicalize(v * 11.0)[0]) == vector_hash(canonicalize(w)[0])
    assert len(h) == 64 and int(h, 16) >= 0
    v2 = v.copy()
    v2[5] = 1e-3
    assert vector_hash(canonicalize(v2)[0]) != h


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.vstack([rand(2), [[np.nan] * DIM]]), "row 2 contains NaN"),
        (np.vstack([rand(1), np.zeros((1, DIM))]), "row 1 is all zeros"),
        (rand(3, dim=DIM + 1), f"expected dimension {DIM}"),
        (np.zeros((2, 2, 2)), "expected a 2-d array"),
    ],
)
def test_canonicalize_rejects_bad_rows_naming_them(bad: Arr, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        canonicalize(bad, DIM)


# -- append and reopen -------------------------------------------------------------------------------------


def test_append_commits_rows_types_and_hashes_across_reopen(tmp_path: Path) -> None:
    x1, x2 = rand(5, 1), rand(3, 2)
    with open_store(tmp_path) as st:
        a = st.append(x1, "movie")
        b = st.append(x2, ["online_video", "movie", "personal_media"])
        assert a.row_ids.tolist() == [0, 1, 2, 3, 4]
        assert b.row_ids.tolist() == [5, 6, 7]
        assert a.hashes == [vector_hash(r) for r in canonicalize(x1)]
    with open_store(tmp_path) as st:
        assert st.rows == 8 and st.live_rows == 8
        np.testing.assert_array_equal(st.matrix(), np.vstack([canonicalize(x1), canonicalize(x2)]))
        names = [st.type_names[c] for c in st.types()]
        assert names == ["movie"] * 5 + ["online_video", "movie", "personal_media"]
        m = json.loads((tmp_path / MANIFEST).read_text())
        assert (m["embedder"], m["dim"], m["rows"]) == ("test-embedder", DIM, 8)
    assert (tmp_path / VECTORS).stat().st_size == 8 * DIM * 4
    assert (tmp_path / TYPES).stat().st_size == 8 * 2


def test_views_stay_valid_after_later_appends(tmp_path: Path) -> None:
    with open_store(tmp_path) as st:
        st.append(rand(4, 1), "movie")
        view = st.matrix()
        before = view.copy()
        st.append(rand(1000, 2), "movie")
        np.testing.assert_array_equal(view, before)
        np.testing.assert_array_equal(st.matrix(0, 4), before)
        assert st.matrix().shape == (1004, DIM)


def test_torn_tail_beyond_the_committed_count_is_truncated_on_open(tmp_path: Path) -> None:
    with open_store(tmp_path) as st:
        st.append(rand(6, 1), "movie")
        good = st.matrix().copy()
    # a crash mid-append: partial rows written past the commit point in every data file
    for name, junk in ((VECTORS, 37), (TYPES, 3), (TOMBSTONES, 5)):
        with open(tmp_path / name, "ab") as fh:
            fh.write(os.urandom(junk))
    with open_store(tmp_path) as st:
        assert st.rows == 6 and st.tombstone_count == 0
        np.testing.assert_array_equal(st.matrix(), good)
        assert (tmp_path / VECTORS).stat().st_size == 6 * DIM * 4
        assert (tmp_path / TYPES).stat().st_size == 12
        assert (tmp_path / TOMBSTONES).stat().st_size == 0
        nxt = st.append(rand(2, 9), "movie")
        assert nxt.row_ids.tolist() == [6, 7]


def test_data_written_but_manifest_not_renamed_is_not_committed(tmp_path: Path) -> None:
    with open_store(tmp_path) as st:
        st.append(rand(3, 1), "movie")
        saved = (tmp_path / MANIFEST).read_bytes()
        st.append(rand(4, 2), "online_video")
    (tmp_path / MANIFEST).write_bytes(saved)  # as if the crash came before the manifest rename
    with open_store(tmp_path) as st:
        assert st.rows == 3 and st.type_names == ("movie",)
        again = st.append(rand(2, 3), "movie")
        assert again.row_ids.tolist() == [3, 4]
        np.testing.assert_array_equal(st.matrix(3, 5), canonicalize(rand(2, 3)))


WRITER = textwrap.dedent(
    """
    import sys, numpy as np, structlog
    from bitharbord.index.vectors import VectorStore
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # stdout carries only progress
    st = VectorStore.open(sys.argv[1], embedder="test-embedder", dim=8)
    b = st.rows // 50
    while True:
        x = np.random.default_rng(b).normal(size=(50, 8))
        st.append(x, "movie" if b % 2 else "online_video")
        if b % 3 == 0:
            st.delete([st.rows - 1])
        b += 1
        print(b, flush=True)
    """
)


def test_kill_9_during_appends_leaves_a_consistent_committed_prefix(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait until it is well into the loop
        line = proc.stdout.readline()
        if line and int(line) >= 20:
            break
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with open_store(tmp_path) as st:
        assert st.rows >= 20 * 50 and st.rows % 50 == 0
        batches = st.rows // 50
        want = np.vstack([canonicalize(np.random.default_rng(b).normal(size=(50, 8))) for b in range(batches)])
        np.testing.assert_array_equal(st.matrix(), want)
        codes = st.types().reshape(batches, 50)
        for b in range(batches):
            assert {st.type_names[c] for c in codes[b]} == {"movie" if b % 2 else "online_video"}
        dead = set(st.tombstones().tolist())
        # every batch b % 3 == 0 deleted its last row; the very last one may have died before its commit
        expected = {50 * b + 49 for b in range(batches) if b % 3 == 0}
        assert dead <= expected and len(expected - dead) <= 1
        assert (tmp_path / VECTORS).stat().st_size == st.rows * DIM * 4


# -- tombstones --------------------------------------------------------------------------------------------


def test_delete_is_idempotent_persisted_and_logged_in_order(tmp_path: Path) -> None:
    with open_store(tmp_path) as st:
        st.append(rand(10), "movie")
        assert st.delete([7, 2]) == 2
        assert st.delete([2, 2, 7]) == 0
        assert st.delete(np.array([4])) == 1
        assert st.alive().tolist() == [i not in (2, 4, 7) for i in range(10)]
        assert st.live_rows == 7
    with open_store(tmp_path) as st:
        assert st.tombstones().tolist() == [2, 7, 4]
        assert st.tombstones(2).tolist() == [4]
        assert not st.alive()[[2, 4, 7]].any() and st.alive().sum() == 7


# -- bad input and damaged stores --------------------------------------------------------------------------


def test_bad_input_raises_and_changes_nothing(tmp_path: Path) -> None:
    with open_store(tmp_path) as st:
        st.append(rand(3), "movie")
        manifest = (tmp_path / MANIFEST).read_bytes()
        sizes = {n: (tmp_path / n).stat().st_size for n in (VECTORS, TYPES, TOMBSTONES)}
        with pytest.raises(ValueError, match="2 type names for 3 vectors"):
            st.append(rand(3, 1), ["movie", "movie"])
        with pytest.raises(ValueError, match="not a type name"):
            st.append(rand(1, 1), "Movie Night")
        with pytest.raises(ValueError, match="row 1 contains NaN"):
            st.append(np.vstack([rand(1), [[np.inf] * DIM]]), "movie")
        with pytest.raises(ValueError, match="row id 3: outside"):
            st.delete([0, 3])
        with pytest.raises(ValueError, match="row id -1"):
            st.delete([-1])
        assert (tmp_path / MANIFEST).read_bytes() == manifest
        assert {n: (tmp_path / n).stat().st_size for n in sizes} == sizes
        assert st.rows == 3 and st.tombstone_count == 0 and st.alive().all()


def test_other_embedder_or_dimension_is_refused(tmp_path: Path) -> None:
    open_store(tmp_path).close()
    with pytest.raises(EmbedderMismatch, match="'test-embedder' vectors of dimension 8"):
        VectorStore.open(tmp_path, embedder="other", dim=DIM)
    with pytest.raises(EmbedderMismatch):
        VectorStore.open(tmp_path, embedder="test-embedder", dim=DIM * 2)


def test_one_owner_at_a_time(tmp_path: Path) -> None:
    st = open_store(tmp_path)
    with pytest.raises(VectorStoreError, match="open in another"):
        open_store(tmp_path)
    st.close()
    open_store(tmp_path).close()


def test_missing_committed_data_or_manifest_is_an_error_not_a_guess(tmp_path: Path) -> None:
    with open_store(tmp_path) as st:
        st.append(rand(4), "movie")
    with open(tmp_path / VECTORS, "r+b") as fh:
        fh.truncate(3 * DIM * 4)
    with pytest.raises(VectorStoreError, match="committed data is missing"):
        open_store(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(tmp_path / VECTORS, other / VECTORS)
    with pytest.raises(VectorStoreError, match=r"without manifest\.json"):
        open_store(other)
    with pytest.raises(VectorStoreError, match="does not exist"):
        open_store(tmp_path / "nowhere", create=False)


def test_index_info_is_recorded_in_the_manifest(tmp_path: Path) -> None:
    with open_store(tmp_path) as st:
        assert st.index_info() is None
        st.set_index_info({"generation": 3, "duration_s": 1.5})
    with open_store(tmp_path) as st:
        assert st.index_info() == {"generation": 3, "duration_s": 1.5}
        assert st.manifest()["index"]["generation"] == 3
