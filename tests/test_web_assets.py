"""The web UI's files as the daemon serves them (the real app over a real sandboxed Daemon, no browser): index.html
loads app.js as an ES module, every module app.js imports (and they import) is served without a token with a
JavaScript content type (a browser refuses a module script of any other type), the Content-Security-Policy lets
this origin's scripts run, and every .js file in bitharbord/api/web/ is part of that graph (none missing, none
orphaned). The pages themselves run in a real browser in tests/test_web_ui.py."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bitharbord.api.app import init_app
from bitharbord.api.ui import WEB_DIR
from tests.api_support import make_box

ClientMaker = Callable[..., Awaitable[TestClient[Any, Any]]]
JS_TYPES = {"text/javascript", "application/javascript"}
MODULE_SCRIPT = re.compile(r'<script type="module" src="(/ui/[^"]+)"></script>')
IMPORT = re.compile(r'^import (?:[^"\']* from )?["\'](\./[^"\']+)["\'];', re.M)


@pytest.fixture
async def client(tmp_path: Path, aiohttp_client: ClientMaker) -> TestClient[Any, Any]:
    box = await make_box(tmp_path)
    return await aiohttp_client(init_app(box.daemon.handles()))


def imports_of(path: str, source: str) -> list[str]:
    """The /ui/ paths an ES module imports ("./x.js" next to it)."""
    base = path.rsplit("/", 1)[0]
    return [f"{base}/{rel[2:]}" for rel in IMPORT.findall(source)]


async def test_every_module_the_page_imports_is_served_as_javascript(client: TestClient[Any, Any]) -> None:
    r = await client.get("/")
    assert r.status == 200
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'self'" in csp
    entries = MODULE_SCRIPT.findall(await r.text())
    assert entries == ["/ui/app.js"], entries

    seen: dict[str, str] = {}
    todo = list(entries)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        r = await client.get(path)  # no token: the login page must load
        assert r.status == 200, (path, r.status)
        assert r.content_type in JS_TYPES, (path, r.content_type)
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        seen[path] = await r.text()
        todo.extend(imports_of(path, seen[path]))

    on_disk = {f"/ui/{p.name}" for p in WEB_DIR.glob("*.js")}
    assert set(seen) == on_disk, (sorted(on_disk - set(seen)), sorted(set(seen) - on_disk))
    assert len(seen) > 1 and all("export " in src for path, src in seen.items() if path != "/ui/app.js")
    for path, src in seen.items():
        assert len(src.splitlines()) <= 400, f"{path}: one job per module, <= 400 lines"


async def test_the_page_and_its_assets_need_no_token(client: TestClient[Any, Any]) -> None:
    for path, kind in (("/", "text/html"), ("/ui/index.html", "text/html"), ("/ui/app.css", "text/css"),
                       ("/ui/app.js", "JS"), ("/ui/favicon.svg", "image/svg+xml")):
        r = await client.get(path)
        assert r.status == 200, (path, r.status)
        assert r.content_type in (JS_TYPES if kind == "JS" else {kind}), (path, r.content_type)
    # A module that does not exist is a 404, not the page (a typo in an import fails loudly in the browser).
    assert (await client.get("/ui/no-such-module.js")).status == 404
