"""The vector store refuses to write when the files under it are not the ones it opened or disagree with what it
committed, and a failed write leaves nothing behind (real files in tmp_path)."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from bitharbord.index import vectors as vmod
from bitharbord.index.vector_files import StoreChanged
from bitharbord.index.vectors import VectorStore

DIM = 8


def rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def test_a_store_replaced_under_an_open_one_is_not_written(tmp_path: Path) -> None:
    """The bug-1 shape: a store opened empty (on a bare mount point), then the real one appears at the same path;
    the open object must not append at its own row count (0) into the real vectors.fp32."""
    root = tmp_path / "vectors"
    real = tmp_path / "real"
    with VectorStore.open(real, embedder="e@8", dim=DIM) as st:
        st.append(rows(4, 1), "movie")
    real_bytes = (real / vmod.VECTORS).read_bytes()
    empty = VectorStore.open(root, embedder="e@8", dim=DIM)  # the store on the bare mount point
    os.rename(root, tmp_path / "bare")
    shutil.copytree(real, root)  # the disk comes back: the real store at the same path
    assert empty.changed_on_disk() is not None
    with pytest.raises(StoreChanged):
        empty.append(rows(2, 2), "movie")
    with pytest.raises(StoreChanged):
        empty.delete([0])
    empty.close()
    assert (root / vmod.VECTORS).read_bytes() == real_bytes
    with VectorStore.open(root, embedder="e@8", dim=DIM) as st:  # opened again from disk: appends after ITS rows
        assert st.append(rows(2, 3), "movie").row_ids.tolist() == [4, 5]


def test_append_refuses_rows_the_idmap_already_knows(tmp_path: Path) -> None:
    with VectorStore.open(tmp_path, embedder="e@8", dim=DIM) as st:
        st.append(rows(3, 1), "movie")
        before = (tmp_path / vmod.VECTORS).read_bytes()
        with pytest.raises(StoreChanged, match="idmap knows rows up to 6"):
            st.append(rows(1, 2), "movie", known_rows=7)
        assert (tmp_path / vmod.VECTORS).read_bytes() == before
        assert st.append(rows(1, 2), "movie", known_rows=3).row_ids.tolist() == [3]


def test_append_refuses_when_the_files_disagree_with_its_rows(tmp_path: Path) -> None:
    with VectorStore.open(tmp_path, embedder="e@8", dim=DIM) as st:
        st.append(rows(3, 1), "movie")
        with open(tmp_path / vmod.VECTORS, "ab") as fh:  # someone else wrote to the file
            fh.write(b"\0" * DIM * 4)
        with pytest.raises(StoreChanged, match="bytes on disk"):
            st.append(rows(1, 2), "movie")
        assert st.rows == 3


def test_a_failed_write_leaves_nothing_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC in the middle of an append (after the vectors were written, while committing): both data files are
    cut back to the committed rows and the store keeps working."""
    with VectorStore.open(tmp_path, embedder="e@8", dim=DIM) as st:
        st.append(rows(3, 1), "movie")
        real = vmod.write_json_atomic

        def full(path: Path, data: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(vmod, "write_json_atomic", full)
        with pytest.raises(OSError, match="No space left"):
            st.append(rows(2, 2), "movie")
        assert (tmp_path / vmod.VECTORS).stat().st_size == 3 * DIM * 4
        assert (tmp_path / vmod.TYPES).stat().st_size == 3 * 2
        assert st.rows == 3
        monkeypatch.setattr(vmod, "write_json_atomic", real)
        assert st.append(rows(2, 2), "movie").row_ids.tolist() == [3, 4]
    with VectorStore.open(tmp_path, embedder="e@8", dim=DIM) as st:
        assert st.rows == 5
