"""Search under load: concurrent text queries are encoded together (bitharbord/search/batching.py), their vectors
cached per embedder, through the real daemon's search service with the packaged MiniLM and the film corpus.

The embedder is the real MiniLM behind a thin wrapper that records each encode_text call (to see the batches) and
can be told to fail, or to stand for another model (its vectors negated: a MiniLM-compatible embedder of another
identity, so a vector cached from the first one would give visibly wrong answers with the second)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from bitharborctl.client import ApiError
from bitharbord.embed.base import AudioInput, Embedder, ImageInput, Modality, Vectors, VideoInput
from bitharbord.embed.minilm import MiniLMEmbedder
from bitharbord.errors import Unavailable
from bitharbord.search.batching import VectorCache, normalise
from bitharbord.search.service import SearchService
from tests.test_search_service import add_films, films, running, until

MINILM = "minilm-l6-v2@384"


class Recording:
    """The real MiniLM, recording the texts of every encode_text call; `fail` makes the forward pass raise,
    `negate` makes it another model (every vector negated)."""

    def __init__(self, inner: MiniLMEmbedder, *, negate: bool = False) -> None:
        self.inner = inner
        self.id = inner.id
        self.dim = inner.dim
        self.modalities: frozenset[Modality] = inner.modalities
        self.negate = negate
        self.fail = False
        self.calls: list[list[str]] = []

    def load(self) -> None:
        self.inner.load()

    def encode_text(self, texts: Sequence[str]) -> Vectors:
        items = list(texts)
        if self.fail:
            raise RuntimeError("the forward pass broke")
        self.calls.append(items)
        out = self.inner.encode_text(items)
        return -out if self.negate else out

    def encode_image(self, images: Sequence[ImageInput]) -> Vectors:
        return self.inner.encode_image(images)

    def encode_video(self, videos: Sequence[VideoInput]) -> Vectors:
        return self.inner.encode_video(videos)

    def encode_audio(self, clips: Sequence[AudioInput]) -> Vectors:
        return self.inner.encode_audio(clips)


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    emb = MiniLMEmbedder()
    emb.load()
    return emb


def mixed_queries() -> list[dict[str, Any]]:
    """Every corpus query with other k, types and min_score, one asked twice, one with other whitespace."""
    out: list[dict[str, Any]] = []
    for i, f in enumerate(films()[:20]):
        for q in f["queries"]:
            out.append({"q": q, "k": (3, 5, 10)[i % 3], "types": ["movie"] if i % 2 else None,
                        "min_score": 0.1 if i % 4 == 3 else None})
    out.append(dict(out[0]))
    out.append(dict(out[1], q="  " + out[1]["q"].replace(" ", "   ") + "\n"))
    return out


async def indexed(box: Any) -> None:
    add_films(box, films())
    box.service.wake()
    await until(lambda: box.service.index_stats().get("vectors") == len(films())
                and box.service.index_stats().get("queue_depth") == 0, what="every film embedded")


def one_at_a_time(service: SearchService, minilm: MiniLMEmbedder) -> Callable[[dict[str, Any]], Any]:
    """Today's path for one query: encode it alone, search the serving generation."""
    async def answer(p: dict[str, Any]) -> list[dict[str, Any]]:
        gen = service.generations.serving
        assert gen is not None
        vec = minilm.encode_text([p["q"]])
        return await service.query.search_vector(gen, vec, p["types"], p["k"], p["min_score"])
    return answer


def same(batched: list[dict[str, Any]], alone: list[dict[str, Any]]) -> None:
    assert [r["id"] for r in batched] == [r["id"] for r in alone]
    for b, a in zip(batched, alone, strict=True):
        assert b["score"] == pytest.approx(a["score"], abs=1e-4)
        assert b["title"] == a["title"]


async def test_concurrent_mixed_queries_are_batched_and_answer_as_one_at_a_time(
        tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    emb = Recording(minilm)
    async with running(tmp_path, lambda cfg: emb) as box:
        await indexed(box)
        service = box.service
        queries = mixed_queries()
        emb.calls.clear()
        answers = await asyncio.gather(*(service.search_text(p["q"], p["types"], p["k"], p["min_score"])
                                         for p in queries))
        # Fewer forward passes than queries; each text encoded once (the repeated and re-spaced ones too).
        assert 1 <= len(emb.calls) < len(queries)
        assert max(len(c) for c in emb.calls) > 1
        encoded = [t for c in emb.calls for t in c]
        assert sorted(encoded) == sorted({normalise(p["q"]) for p in queries})
        alone = one_at_a_time(service, minilm)
        for p, got in zip(queries, answers, strict=True):
            assert got["query"] == p["q"] and got["k"] == p["k"] and got["embedder"] == MINILM
            assert got["results"], p
            same(got["results"], await alone(p))

        # Over HTTP too: concurrent GET /v1/search answer what one query alone does.
        http = await asyncio.gather(*(box.get("/v1/search?" + urlencode({"q": p["q"] + " at night", "k": p["k"]}))
                                      for p in queries[:8]))
        for p, got in zip(queries[:8], http, strict=True):
            same(got["results"], await alone(dict(p, q=p["q"] + " at night", types=None, min_score=None)))


async def test_the_cache_answers_a_repeated_query_and_forgets_on_an_embedder_change(
        tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    first, second = Recording(minilm), Recording(minilm, negate=True)
    current = [first]
    async with running(tmp_path, lambda cfg: current[0]) as box:
        await indexed(box)
        service = box.service
        q = "creepy bald count brings the plague on a ship"
        first.calls.clear()
        a = await service.search_text(q, k=5)
        again = await service.search_text("  creepy bald count brings   the plague on a ship ", k=5)
        assert first.calls == [[q]]  # the second one came from the cache
        assert [r["id"] for r in again["results"]] == [r["id"] for r in a["results"]]
        assert a["results"][0]["title"] == "Nosferatu"

        # The embedder is made again (as after it failed to load and came back) and it is another model now.
        current[0] = second
        service.generations.embedders.pop(MINILM)
        b = await service.search_text(q, k=5)
        assert second.calls == [[q]] and first.calls == [[q]]  # not the old model's cached vector
        assert b["results"][0]["title"] != "Nosferatu"
        assert b["results"][0]["score"] < a["results"][-1]["score"]
        b2 = await service.search_text(q, k=5)
        assert second.calls == [[q]]  # the new model's own cache
        assert b2["results"] == b["results"]

        # The same embedder object encoding for another generation gets its own batcher (and cache) too.
        assert service.query.batcher("other@384", second) is not service.query.batcher(MINILM, second)


async def test_a_failed_forward_pass_fails_its_queries_cleanly_and_the_next_works(
        tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    emb = Recording(minilm)
    async with running(tmp_path, lambda cfg: emb) as box:
        await indexed(box)
        service = box.service
        emb.calls.clear()
        emb.fail = True
        got = await asyncio.gather(*(service.search_text(f"a film about {w}") for w in ("trains", "ghosts", "war")),
                                   asyncio.to_thread(box.client().request, "GET", "/v1/search?q=a%20robot"),
                                   return_exceptions=True)
        for exc in got[:3]:
            assert isinstance(exc, Unavailable) and exc.code == "embedder_unavailable", exc
            assert "the forward pass broke" in exc.message
        http = got[3]
        assert isinstance(http, ApiError) and http.status == 503 and http.code == "embedder_unavailable", http
        emb.fail = False
        ok = await asyncio.gather(service.search_text("a film about trains"), service.search_text("a robot"))
        assert all(r["results"] for r in ok)
        assert emb.calls == [["a film about trains", "a robot"]]  # nothing of the failed pass was cached


def test_the_cache_keeps_the_most_recently_used() -> None:
    import numpy as np

    cache = VectorCache(2)
    vec = [np.full(3, i, dtype=np.float32) for i in range(3)]
    cache.put("a", vec[0])
    cache.put("b", vec[1])
    assert cache.get("a") is vec[0]  # "b" is now the least recently used
    cache.put("c", vec[2])
    assert cache.get("b") is None and cache.get("a") is vec[0] and cache.get("c") is vec[2]
    assert len(cache) == 2
    off = VectorCache(0)
    off.put("a", vec[0])
    assert off.get("a") is None
    assert normalise(" a \t b\n") == "a b" and normalise("a\u00a0b") == "a\u00a0b"


def embedder_protocol(e: Recording) -> Embedder:
    return e  # the wrapper is a whole Embedder (mypy checks it)
