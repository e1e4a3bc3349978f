"""store.blobs: content-addressed copies on real filesystems (tmp dirs, a tiny tmpfs for ENOSPC)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from blake3 import blake3

from bitharbord.store.blobs import (
    TEMP_PREFIX,
    BlobStore,
    DiskFullError,
    HashMismatchError,
    SourceUnreadableError,
    StoredBlob,
    blob_extension,
    cleanup_temp,
    stored_digests,
)
from bitharbord.store.hashing import hash_file
from tests.media import make_jpeg, random_file

REPO = Path(__file__).resolve().parents[1]


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def temp_files(root: Path) -> list[Path]:
    return [p for p in all_files(root) if p.name.startswith(TEMP_PREFIX)]


@pytest.fixture
def media_root(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    return root


def test_layout_content_and_mode(tmp_path: Path, media_root: Path) -> None:
    src = make_jpeg(tmp_path / "in" / "IMG_0001.JPEG")
    blob = BlobStore(media_root).put(src, "personal")
    h = blake3(src.read_bytes()).hexdigest()
    assert blob.hexdigest == h
    assert blob.created
    assert blob.path == media_root / "personal" / h[:2] / f"{h}.jpg"
    assert blob.relpath == f"personal/{h[:2]}/{h}.jpg"
    assert blob.path.read_bytes() == src.read_bytes()
    assert blob.size == src.stat().st_size
    assert stat.S_IMODE(blob.path.stat().st_mode) == 0o640
    assert temp_files(media_root) == []


def test_same_content_is_stored_once(tmp_path: Path, media_root: Path) -> None:
    store = BlobStore(media_root)
    a = random_file(tmp_path / "a" / "clip.mp4", 70_000, seed=3)
    b = tmp_path / "b" / "copy of clip.mp4"
    b.parent.mkdir()
    b.write_bytes(a.read_bytes())
    first = store.put(a, "online_video")
    again = store.put(b, "online_video")  # digest not known beforehand: copied, found, dropped
    other_type = store.put(b, "movie", expected_hash=first.hexdigest)
    assert first.created and not again.created and not other_type.created
    assert again.path == first.path == other_type.path
    assert other_type.media_type == "online_video"
    assert all_files(media_root) == [first.path]


def test_known_digest_of_existing_blob_copies_nothing(tmp_path: Path, media_root: Path) -> None:
    store = BlobStore(media_root)
    src = random_file(tmp_path / "x.bin", 5000, seed=9)
    first = store.put(src, "other")
    # the source is gone now: had put() tried to read it, it would have failed
    src.unlink()
    again = store.put(src, "other", expected_hash=first.hexdigest)
    assert not again.created and again.path == first.path


def test_large_file_kernel_copy_is_verified(tmp_path: Path, media_root: Path) -> None:
    src = random_file(tmp_path / "movie.mkv", 20 * 1024 * 1024 + 333, seed=11)
    expected = hash_file(src).hexdigest
    blob = BlobStore(media_root, max_threads=2).put(src, "movie", expected_hash=expected)
    assert blob.created and blob.hexdigest == expected
    assert blob.path.name == f"{expected}.mkv"
    assert hash_file(blob.path).hexdigest == expected
    assert temp_files(media_root) == []


def test_expected_hash_mismatch_stores_nothing(tmp_path: Path, media_root: Path) -> None:
    src = random_file(tmp_path / "a.jpg", 3000, seed=1)
    stale = blake3(b"what the file held when it was hashed").hexdigest()
    with pytest.raises(HashMismatchError, match="changed after it was hashed") as info:
        BlobStore(media_root).put(src, "personal", expected_hash=stale)
    assert info.value.path == str(src)
    assert all_files(media_root) == []


def test_large_file_with_stale_digest_is_refused(tmp_path: Path, media_root: Path) -> None:
    src = random_file(tmp_path / "movie.mkv", 9 * 1024 * 1024, seed=12)
    stale = blake3(b"older content").hexdigest()
    with pytest.raises(HashMismatchError, match=f"expected {stale}"):
        BlobStore(media_root).put(src, "movie", expected_hash=stale)
    assert all_files(media_root) == []


def test_find_by_name_or_by_listing(tmp_path: Path, media_root: Path) -> None:
    store = BlobStore(media_root)
    blob = store.put(random_file(tmp_path / "a.webm", 100), "online_video")
    assert store.find(blob.hexdigest) == blob.path
    assert store.find(blob.hexdigest, ext="webm") == blob.path
    assert store.find(blob.hexdigest, ext="mp4") is None
    assert store.find(blake3(b"never stored").hexdigest()) is None


def test_extension_rules() -> None:
    assert blob_extension("a/b/Photo.JPEG") == "jpg"
    assert blob_extension("movie.MKV") == "mkv"
    assert blob_extension("README") == "bin"
    assert blob_extension("weird.ext with space") == "bin"
    assert blob_extension("x.averyveryverylongext") == "bin"


def test_bad_arguments_are_rejected(tmp_path: Path, media_root: Path) -> None:
    src = random_file(tmp_path / "a", 10)
    store = BlobStore(media_root)
    with pytest.raises(ValueError, match="unknown media type 'photos'"):
        store.put(src, "photos")
    with pytest.raises(ValueError, match="64 lower-case hex"):
        store.put(src, "personal", expected_hash="ABC")
    assert all_files(media_root) == []


def test_missing_media_root(tmp_path: Path) -> None:
    src = random_file(tmp_path / "a", 10)
    with pytest.raises(Exception, match="media root does not exist"):
        BlobStore(tmp_path / "not-mounted").put(src, "personal")
    assert not (tmp_path / "not-mounted").exists()


# --------------------------------------------------------------------------- unreadable sources


def test_directory_source(tmp_path: Path, media_root: Path) -> None:
    d = tmp_path / "folder.mp4"
    d.mkdir()
    with pytest.raises(SourceUnreadableError, match="is a directory") as info:
        BlobStore(media_root).put(d, "movie")
    assert info.value.reason.startswith("is a directory")
    assert all_files(media_root) == []


def test_fifo_source_does_not_block(tmp_path: Path, media_root: Path) -> None:
    fifo = tmp_path / "stream.mp4"
    os.mkfifo(fifo)
    with pytest.raises(SourceUnreadableError, match="FIFO"):
        BlobStore(media_root).put(fifo, "movie")


def test_missing_source(tmp_path: Path, media_root: Path) -> None:
    with pytest.raises(SourceUnreadableError, match="no such file"):
        BlobStore(media_root).put(tmp_path / "gone.jpg", "personal")


def test_permission_denied_source() -> None:
    """chmod 000 does not stop root, so as root the store runs in a child that dropped to nobody
    (after importing everything: the interpreter's own files may not be readable by nobody)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:  # pytest's tmp_path is private to root
        top = Path(tmp)
        top.chmod(0o755)
        media = top / "media"
        media.mkdir()
        media.chmod(0o777)
        src = random_file(top / "secret.jpg", 100)
        src.chmod(0o000)
        code = textwrap.dedent(f"""
            import os
            from bitharbord.store.blobs import BlobStore, SourceUnreadableError
            if os.geteuid() == 0:
                os.setgroups([]); os.setgid(65534); os.setuid(65534)
            try:
                BlobStore({str(media)!r}).put({str(src)!r}, "personal")
            except SourceUnreadableError as exc:
                print("REASON:" + exc.reason)
            else:
                print("STORED")
        """)
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert "REASON:permission denied" in out.stdout, out.stdout + out.stderr
        assert all_files(media) == []


# --------------------------------------------------------------------------- full disk


@pytest.mark.root
@pytest.mark.parametrize("size", [2 * 1024 * 1024, 10 * 1024 * 1024], ids=["small-path", "large-path"])
def test_enospc_found_up_front(tmp_path: Path, tiny_fs: Path, size: int) -> None:
    src = random_file(tmp_path / "big.mp4", size)
    with pytest.raises(DiskFullError, match="no space left") as info:
        BlobStore(tiny_fs).put(src, "movie")
    assert f"needs {size} bytes" in info.value.reason
    assert all_files(tiny_fs) == []


@pytest.mark.root
@pytest.mark.parametrize("size", [2 * 1024 * 1024, 10 * 1024 * 1024], ids=["small-path", "large-path"])
def test_enospc_while_writing(tmp_path: Path, tiny_fs: Path, size: int) -> None:
    src = random_file(tmp_path / "big.mp4", size)
    store = BlobStore(tiny_fs, precheck_space=False)
    with pytest.raises(DiskFullError, match="no space left on device while writing"):
        store.put(src, "movie")
    assert all_files(tiny_fs) == []  # the partial temp file was removed
    # the store still works for what fits
    small = random_file(tmp_path / "small.mp4", 10_000, seed=5)
    assert store.put(small, "movie").created


# --------------------------------------------------------------------------- crashes


def test_crash_mid_copy_leaves_only_a_temp_file(tmp_path: Path, media_root: Path) -> None:
    """A child is killed by SIGXFSZ (RLIMIT_FSIZE) in the middle of writing: a real crash at a known point."""
    src = random_file(tmp_path / "movie.mkv", 12 * 1024 * 1024, seed=4)
    code = textwrap.dedent(f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it by default (writes get EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024 * 1024, 1024 * 1024))
        from bitharbord.store.blobs import BlobStore
        BlobStore({str(media_root)!r}).put({str(src)!r}, "movie")
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGXFSZ, proc.stderr
    leftovers = all_files(media_root)
    assert len(leftovers) == 1 and leftovers[0].name.startswith(TEMP_PREFIX)
    assert leftovers[0].stat().st_size == 1024 * 1024  # half-written, and never under a blob name
    assert stored_digests(media_root) == {}

    removed = cleanup_temp(media_root)
    assert removed == leftovers
    assert all_files(media_root) == []
    blob = BlobStore(media_root).put(src, "movie")
    assert blob.created and all_files(media_root) == [blob.path]


def test_cleanup_temp_only_touches_temp_files(tmp_path: Path, media_root: Path) -> None:
    store = BlobStore(media_root)
    blob = store.put(random_file(tmp_path / "a.jpg", 100, seed=1), "personal")
    shard_temp = blob.path.parent / f"{TEMP_PREFIX}deadbeef"
    type_temp = media_root / "movie" / f"{TEMP_PREFIX}cafe"
    type_temp.parent.mkdir()
    for p in (shard_temp, type_temp):
        p.write_bytes(b"partial")
    unrelated = media_root / f"{TEMP_PREFIX}not-a-blob-dir"  # the media root also holds the database
    unrelated.write_bytes(b"x")
    old = time.time() - 3600
    os.utime(shard_temp, (old, old))

    assert cleanup_temp(media_root, min_age_s=600) == [shard_temp]  # a young temp may be a put in progress
    assert type_temp.exists()
    assert store.cleanup_temp() == [type_temp]
    assert unrelated.exists() and blob.path.exists()


def test_put_many_runs_in_parallel_and_reports_each(tmp_path: Path, media_root: Path) -> None:
    sources = [random_file(tmp_path / f"f{i}.jpg", 2000 + i, seed=i) for i in range(30)]
    items: list[tuple[str | os.PathLike[str], str, str | None]] = [(p, "personal", None) for p in sources]
    items.append((tmp_path / "missing.jpg", "personal", None))
    items.append((sources[0], "personal", hash_file(sources[0]).hexdigest))
    results = BlobStore(media_root).put_many(items, workers=8)
    assert len(results) == 32
    stored = [r for r in results if isinstance(r, StoredBlob)]
    assert sum(r.created for r in stored) == 30
    assert isinstance(results[30], SourceUnreadableError)
    assert isinstance(results[31], StoredBlob) and not results[31].created
    assert len(stored_digests(media_root)) == 30
    assert temp_files(media_root) == []
