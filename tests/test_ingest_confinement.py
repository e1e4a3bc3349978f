"""POST /v1/ingest/local reads only what harbor.yaml lets it (issue 13, bug 6): files below a watch folder or a
`library.import_roots` folder, judged on the real path (symlinks and '..' resolved). Anything else, /etc/shadow
first, is 403 "outside_import_roots" with the reason, and nothing is queued. A real daemon in process, the route
over its Unix socket."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bitharborctl.client import ApiError
from bitharbord.config import ConfigError, parse
from bitharbord.ingest.service import IngestService
from tests.conftest import harbor_text
from tests.media import make_jpeg
from tests.test_ingest_service import Running, start


@pytest.fixture
async def harbor(tmp_path: Path) -> AsyncIterator[Running]:
    running = await start(tmp_path, IngestService(max_upload_bytes=1 << 20))  # import_roots: [tmp_path/camera]
    yield running
    running.daemon.stop.set()
    await running.task


async def refused(harbor: Running, path: str | Path, **extra: str) -> ApiError:
    with pytest.raises(ApiError) as err:
        await harbor.call("POST", "/v1/ingest/local", {"paths": [str(path)], "type": "personal", **extra})
    return err.value


async def test_files_outside_the_import_roots_are_403(harbor: Running, tmp_path: Path) -> None:
    camera = tmp_path / "camera"
    make_jpeg(camera / "ok.jpg", color=(1, 2, 3))
    secret = make_jpeg(tmp_path / "private" / "secret.jpg", color=(200, 0, 0))
    (camera / "link.jpg").symlink_to(secret)
    (camera / "linked-dir").symlink_to(secret.parent, target_is_directory=True)
    (camera / "etc").symlink_to("/etc", target_is_directory=True)

    for path in ("/etc/shadow", "/etc/passwd", secret, secret.parent, camera / "link.jpg", camera / "linked-dir",
                 camera / "linked-dir" / "secret.jpg", f"{camera}/../private/secret.jpg", camera / "etc" / "shadow",
                 "/home", "/root/.ssh/id_rsa"):
        err = await refused(harbor, path)
        assert (err.status, err.code) == (403, "outside_import_roots"), (path, err.status, err.code)
        assert "outside the watch folders and library.import_roots" in err.message
        assert str(camera) in err.message  # it says which folders are allowed
    err = await refused(harbor, camera / "link.jpg")
    assert f"resolves to {secret}" in err.message
    assert harbor.sql("SELECT count(*) FROM ingest_jobs") == [(0,)]

    # one forbidden path refuses the whole request
    with pytest.raises(ApiError) as both:
        await harbor.call("POST", "/v1/ingest/local", {"paths": [str(camera / "ok.jpg"), str(secret)],
                                                       "type": "personal"})
    assert both.value.status == 403
    assert harbor.sql("SELECT count(*) FROM ingest_jobs") == [(0,)]


async def test_files_under_an_import_root_or_a_watch_folder_are_taken(harbor: Running, tmp_path: Path) -> None:
    camera = tmp_path / "camera"
    photo = make_jpeg(camera / "day1" / "DSC1.jpg", color=(1, 2, 3))
    (camera / "alias.jpg").symlink_to(photo)  # a link that stays inside resolves to the real file
    inbox = harbor.root / "inbox"
    dropped = make_jpeg(inbox / "IMG1.jpg", color=(9, 9, 9))
    data = await harbor.call("POST", "/v1/ingest/local", {"paths": [str(camera / "alias.jpg"), str(dropped)],
                                                          "wait": True, "type": "personal"})
    assert [j["path"] for j in data["jobs"]] == [str(photo), str(dropped)]
    assert {j["stage"] for j in data["jobs"]} == {"done"}
    data = await harbor.call("POST", "/v1/ingest/local", {"paths": [f"{camera}/day1/../day1"], "type": "personal"})
    assert [j["path"] for j in data["jobs"]] == [str(photo)]


@pytest.mark.parametrize(("roots", "message"), [
    ("[/]", "the whole filesystem cannot be an import root"),
    ("[/proc/self]", "is a system directory (/proc)"),
    ("[relative]", "expected an absolute path"),
    ("[/srv/a/../b]", "'..' is not allowed"),
    ("[/srv/photos, /srv/photos]", "library.import_roots[1] /srv/photos is listed twice"),
    ("[/box/media/x]", "is inside paths.media_root /box/media"),
])
def test_import_roots_are_validated(roots: str, message: str) -> None:
    text = harbor_text(Path("/box"), f"  import_roots: {roots}\n")
    with pytest.raises(ConfigError) as err:
        parse(text, "harbor.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith("harbor.yaml:")


def test_import_roots_parse_and_stay_put_in_a_sandbox(tmp_path: Path) -> None:
    harbor = parse(harbor_text(Path("/box"), "  import_roots: [/srv/photos, /home/me/Pictures/]\n"))
    assert harbor.library.import_roots == ["/srv/photos", "/home/me/Pictures"]
    # inputs BitHarbor only reads are not moved under a --state-dir sandbox (like key files)
    assert harbor.rebased(tmp_path).library.import_roots == ["/srv/photos", "/home/me/Pictures"]
    assert os.path.isabs(harbor.rebased(tmp_path).paths.media_root)
