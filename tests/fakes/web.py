"""A local video host for the yt-dlp tests, as an aiohttp app.

  GET/HEAD /clip.mp4, /big.mp4   direct media with Content-Type video/mp4 (yt-dlp's generic extractor)
  GET /page.html                 an HTML5 page with og: tags and a <video> element (the html5 extractor)
  GET /videoplayback?itag=N      the "googlevideo" format URLs of a replayed YouTube-shaped info.json
  GET /empty.html                a page with no media at all
  GET /slow.mp4                  2 MB trickled out over 4 s (cancellation)

The bytes are generated; `sizes` holds the size served per itag so it agrees with the info.json.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

from aiohttp import web


def blob(seed: str, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]


class FakeVideoHost:
    def __init__(self, *, clip_bytes: int = 200_000, big_bytes: int = 600_000,
                 itag_sizes: dict[str, int] | None = None) -> None:
        self.files = {"/clip.mp4": blob("clip", clip_bytes), "/big.mp4": blob("big", big_bytes)}
        self.itag_sizes = itag_sizes or {}
        self.requests: list[Seen] = []
        self.app = web.Application(middlewares=[self._record])
        self.app.router.add_get("/clip.mp4", self.media)
        self.app.router.add_get("/big.mp4", self.media)
        self.app.router.add_get("/page.html", self.page)
        self.app.router.add_get("/empty.html", self.empty)
        self.app.router.add_get("/videoplayback", self.videoplayback)
        self.app.router.add_get("/slow.mp4", self.slow)
        self.slow_chunks = 200
        self.slow_sent = 0

    def itag_bytes(self, itag: str) -> bytes:
        return blob(f"itag{itag}", self.itag_sizes[itag])

    def requests_to(self, path: str, method: str = "GET") -> list[Seen]:
        return [r for r in self.requests if r.path == path and r.method == method]

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(Seen(request.method, request.path, dict(request.query)))
        result: web.StreamResponse = await handler(request)
        return result

    async def media(self, request: web.Request) -> web.Response:
        return web.Response(body=self.files[request.path], content_type="video/mp4")

    async def page(self, request: web.Request) -> web.Response:
        base = f"http://{request.host}"
        html = f"""<!doctype html>
<html><head><title>Harbor clip - a page</title>
<meta property="og:title" content="Harbor clip">
<meta property="og:description" content="Boats at dusk.">
<meta property="og:video" content="{base}/clip.mp4">
<meta property="og:video:type" content="video/mp4">
</head><body><h1>Harbor clip</h1><video controls src="/clip.mp4"></video></body></html>"""
        return web.Response(text=html, content_type="text/html")

    async def empty(self, request: web.Request) -> web.Response:
        return web.Response(text="<html><head><title>Nothing</title></head><body>no video</body></html>",
                            content_type="text/html")

    async def videoplayback(self, request: web.Request) -> web.Response:
        itag = request.query.get("itag", "")
        if itag not in self.itag_sizes:
            return web.Response(status=403, text="Forbidden")
        return web.Response(body=self.itag_bytes(itag), content_type="video/mp4")

    async def slow(self, request: web.Request) -> web.StreamResponse:
        """10 kB every 20 ms (2 MB in all), counting what was sent: for cancellation tests."""
        chunk = blob("slow", 10_000)
        response = web.StreamResponse(headers={"Content-Type": "video/mp4",
                                               "Content-Length": str(len(chunk) * self.slow_chunks)})
        await response.prepare(request)
        for _ in range(self.slow_chunks):
            await response.write(chunk)
            self.slow_sent += len(chunk)
            await asyncio.sleep(0.02)
        await response.write_eof()
        return response
