"""Real retrieval: the shipped film corpus, documents from document.py, the real MiniLM model, exact cosine top-3.

The corpus (tests/corpus/films.json) holds public-domain films with synopses and two queries each that a person
might type, none of which repeats the title. Nothing here is hard-coded but the threshold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bitharbord.embed.document import build_document
from bitharbord.embed.minilm import MiniLMEmbedder

CORPUS = Path(__file__).with_name("corpus") / "films.json"
TOP_K = 3
MIN_HIT_RATE = 0.9


def _films() -> list[dict[str, Any]]:
    films: list[dict[str, Any]] = json.loads(CORPUS.read_text(encoding="utf-8"))["films"]
    return films


def test_corpus_is_well_formed() -> None:
    films = _films()
    assert len(films) >= 30
    titles = [f["title"] for f in films]
    assert len(set(titles)) == len(titles)
    for film in films:
        for key in ("title", "year", "synopsis", "cast", "genres", "queries"):
            assert film.get(key), f"{film.get('title')}: missing {key}"
        assert isinstance(film["year"], int) and 1890 <= film["year"] <= 1970
        assert len(film["queries"]) == 2
        for query in film["queries"]:
            # A query must not simply repeat the title (ignoring a leading article and a subtitle).
            main_title = film["title"].split(":")[0].lower().removeprefix("the ").strip()
            assert main_title not in query.lower(), f"query {query!r} repeats the title {film['title']!r}"


@pytest.mark.slow
def test_top3_hit_rate_on_film_corpus() -> None:
    films = _films()
    docs = [build_document({"type": "movie", **{k: v for k, v in f.items() if k != "queries"}}) for f in films]
    queries = [(q, i) for i, f in enumerate(films) for q in f["queries"]]

    embedder = MiniLMEmbedder()
    doc_vecs = embedder.encode_text(docs)
    query_vecs = embedder.encode_text([q for q, _ in queries])
    assert doc_vecs.shape == (len(films), 384)
    assert query_vecs.shape == (len(queries), 384)

    scores = query_vecs @ doc_vecs.T  # unit vectors: cosine similarity
    top = np.argsort(-scores, axis=1)[:, :TOP_K]
    hits = 0
    top1 = 0
    misses: list[str] = []
    for row, (query, want) in enumerate(queries):
        if want in top[row]:
            hits += 1
            top1 += int(top[row][0] == want)
        else:
            rank = int(np.where(np.argsort(-scores[row]) == want)[0][0]) + 1
            got = ", ".join(f"{films[j]['title']} ({scores[row, j]:.2f})" for j in top[row])
            misses.append(f"  {query!r}: wanted {films[want]['title']} (rank {rank}, "
                          f"{scores[row, want]:.2f}); got {got}")
    rate = hits / len(queries)
    print(f"\nMiniLM top-{TOP_K} hit rate {hits}/{len(queries)} = {rate:.3f}; "
          f"top-1 {top1}/{len(queries)} = {top1 / len(queries):.3f}")
    if misses:
        print("misses:\n" + "\n".join(misses))
    assert rate >= MIN_HIT_RATE, "top-3 hit rate below threshold; misses:\n" + "\n".join(misses)
