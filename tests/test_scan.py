"""ingest.scan: real directory trees; diff_scan as pure data."""

from __future__ import annotations

import os
from pathlib import Path

from bitharbord.config import WatchFolder
from bitharbord.ingest.scan import (
    Fingerprint,
    carry_forward,
    diff_scan,
    is_skipped_name,
    media_type_for,
    scan_folder,
    scan_folders,
)


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def tree(root: Path) -> None:
    touch(root / "a.jpg")
    touch(root / "sub" / "b.mp4", b"video")
    touch(root / "sub" / "deeper" / "c.png")
    touch(root / ".hidden.jpg")
    touch(root / ".trash" / "d.jpg")
    touch(root / "movie.mkv.part")
    touch(root / "Download.MP4.crdownload")
    touch(root / "clip.mp4.ytdl")
    touch(root / "notes.txt~")
    os.symlink(root / "a.jpg", root / "link.jpg")
    os.symlink(root / "sub", root / "linkdir")
    os.mkfifo(root / "pipe.mp4")


def test_walk_skips_hidden_partial_symlinks_and_special_files(tmp_path: Path) -> None:
    tree(tmp_path)
    result = scan_folder(tmp_path)
    assert sorted(result.files) == sorted(
        str(tmp_path / p) for p in ("a.jpg", "sub/b.mp4", "sub/deeper/c.png")
    )
    assert result.unavailable == () and result.problems == ()
    st = (tmp_path / "sub" / "b.mp4").stat()
    assert result.files[str(tmp_path / "sub" / "b.mp4")] == Fingerprint(5, st.st_mtime_ns, st.st_ino, st.st_dev)


def test_non_recursive(tmp_path: Path) -> None:
    tree(tmp_path)
    assert sorted(scan_folder(tmp_path, recursive=False).files) == [str(tmp_path / "a.jpg")]


def test_skip_rules() -> None:
    assert is_skipped_name(".DS_Store") and is_skipped_name("x.PART") and is_skipped_name("a.tmp")
    assert not is_skipped_name("party.mp4") and not is_skipped_name("photo.jpg")


def test_no_change_then_new_changed_vanished(tmp_path: Path) -> None:
    tree(tmp_path)
    first = scan_folder(tmp_path).files
    same = diff_scan(first, scan_folder(tmp_path).files)
    assert same.empty and same.unchanged == frozenset(first)

    touch(tmp_path / "new.jpg")
    (tmp_path / "a.jpg").write_bytes(b"edited content")
    (tmp_path / "sub" / "deeper" / "c.png").unlink()
    delta = diff_scan(first, scan_folder(tmp_path).files)
    assert delta.new == (str(tmp_path / "new.jpg"),)
    assert delta.changed == (str(tmp_path / "a.jpg"),)
    assert delta.vanished == (str(tmp_path / "sub" / "deeper" / "c.png"),)
    assert delta.moved == ()
    assert delta.unchanged == {str(tmp_path / "sub" / "b.mp4")}


def test_same_size_rewrite_with_old_mtime_is_changed_by_inode(tmp_path: Path) -> None:
    p = touch(tmp_path / "a.jpg", b"AAAA")
    before = scan_folder(tmp_path).files
    st = p.stat()
    replacement = touch(tmp_path / "tmpname", b"BBBB")
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(replacement, p)  # editors' atomic save: same name, size and mtime, new inode
    delta = diff_scan(before, scan_folder(tmp_path).files)
    assert delta.changed == (str(p),)


def test_renames_and_moves_keep_identity(tmp_path: Path) -> None:
    tree(tmp_path)
    before = scan_folder(tmp_path).files
    os.rename(tmp_path / "a.jpg", tmp_path / "renamed.jpg")
    os.rename(tmp_path / "sub" / "b.mp4", tmp_path / "sub" / "deeper" / "b.mp4")
    after = scan_folder(tmp_path).files
    delta = diff_scan(before, after)
    assert set(delta.moved) == {
        (str(tmp_path / "a.jpg"), str(tmp_path / "renamed.jpg")),
        (str(tmp_path / "sub" / "b.mp4"), str(tmp_path / "sub" / "deeper" / "b.mp4")),
    }
    assert delta.new == () and delta.vanished == () and delta.changed == ()
    old, new = str(tmp_path / "a.jpg"), str(tmp_path / "renamed.jpg")
    assert before[old] == after[new]


def test_moved_and_modified_is_not_a_move(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg", b"1")
    before = scan_folder(tmp_path).files
    os.rename(tmp_path / "a.jpg", tmp_path / "b.jpg")
    (tmp_path / "b.jpg").write_bytes(b"12")
    delta = diff_scan(before, scan_folder(tmp_path).files)
    assert delta.moved == ()
    assert delta.new == (str(tmp_path / "b.jpg"),) and delta.vanished == (str(tmp_path / "a.jpg"),)


def test_new_hard_link_is_new_not_moved(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg")
    before = scan_folder(tmp_path).files
    os.link(tmp_path / "a.jpg", tmp_path / "b.jpg")
    delta = diff_scan(before, scan_folder(tmp_path).files)
    assert delta.new == (str(tmp_path / "b.jpg"),) and delta.moved == ()


def test_copy_elsewhere_then_delete_is_not_a_move(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg", b"abc")
    before = scan_folder(tmp_path).files
    (tmp_path / "b.jpg").write_bytes(b"abc")
    (tmp_path / "a.jpg").unlink()
    delta = diff_scan(before, scan_folder(tmp_path).files)
    # another inode: it may be another file entirely, so it is hashed (and deduplicated by the store)
    assert delta.moved == () and len(delta.new) == 1 and len(delta.vanished) == 1


def test_device_number_change_alone_is_unchanged() -> None:
    prev = {"/w/a.jpg": Fingerprint(10, 111, 5, 2049)}
    now = {"/w/a.jpg": Fingerprint(10, 111, 5, 64769)}  # the same array after a reboot: md127 -> md0
    delta = diff_scan(prev, now)
    assert delta.empty and delta.unchanged == {"/w/a.jpg"}


def test_move_pairs_prefer_same_device() -> None:
    prev = {"/w/a": Fingerprint(1, 2, 3, 10), "/w/b": Fingerprint(1, 2, 3, 20)}
    now = {"/w/c": Fingerprint(1, 2, 3, 20)}
    delta = diff_scan(prev, now)
    assert delta.moved == (("/w/b", "/w/c"),) and delta.vanished == ("/w/a",)


def test_missing_watch_folder_is_unavailable_not_vanished(tmp_path: Path) -> None:
    mnt = tmp_path / "usb"
    touch(mnt / "a.jpg")
    touch(tmp_path / "home" / "b.jpg")
    folders = [WatchFolder(path=str(mnt), type="personal"), WatchFolder(path=str(tmp_path / "home"), type="other")]
    before = scan_folders(folders)
    (mnt / "a.jpg").unlink()
    mnt.rmdir()  # the disk is not mounted any more
    result = scan_folders(folders)
    assert result.unavailable == (str(mnt),)
    assert "does not exist" in result.problems[0].reason
    delta = diff_scan(before.files, result.files, unavailable=result.unavailable)
    assert delta.vanished == () and delta.unreachable == (str(mnt / "a.jpg"),)
    assert delta.unchanged == {str(tmp_path / "home" / "b.jpg")}
    kept = carry_forward(before.files, result)
    assert kept == before.files  # remembered until the folder is back


def test_watch_folder_that_is_a_file(tmp_path: Path) -> None:
    f = touch(tmp_path / "notadir")
    result = scan_folder(f)
    assert result.files == {} and result.unavailable == (str(f),)
    assert result.problems[0].reason == "is not a directory"


def test_media_type_for_deepest_folder() -> None:
    folders = [
        WatchFolder(path="/srv/media", type="other"),
        WatchFolder(path="/srv/media/photos", type="personal"),
        WatchFolder(path="/srv/flat", type="movie", recursive=False),
    ]
    assert media_type_for("/srv/media/photos/2020/a.jpg", folders) == "personal"
    assert media_type_for("/srv/media/x.bin", folders) == "other"
    assert media_type_for("/srv/flat/m.mkv", folders) == "movie"
    assert media_type_for("/srv/flat/sub/m.mkv", folders) is None
    assert media_type_for("/srv/mediaX/a.jpg", folders) is None
