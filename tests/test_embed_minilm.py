"""The default MiniLM embedder with its real packaged weights, and the shared embedder helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bitharbord.config import Embedding
from bitharbord.embed.base import Embedder, EmbedError, UnsupportedModality, batches, l2_normalise
from bitharbord.embed.loader import load_embedder
from bitharbord.embed.minilm import MINILM_DIM, MINILM_ID, MiniLMEmbedder, hub_offline

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    e = MiniLMEmbedder()
    e.load()
    return e


def _cos(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    return float(np.dot(a, b))


# --------------------------------------------------------------------------- helpers


def test_l2_normalise_rows_unit_and_zero_rows_stay_zero() -> None:
    out = l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0], [1e-3, 0.0]]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]], rtol=1e-6)
    assert not np.isnan(out).any()


def test_l2_normalise_refuses_non_matrix() -> None:
    with pytest.raises(ValueError, match=r"2-d array"):
        l2_normalise(np.ones(3))


def test_batches_cover_everything_once() -> None:
    assert batches(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert batches(0, 3) == []
    with pytest.raises(ValueError, match="at least 1"):
        batches(3, 0)


# --------------------------------------------------------------------------- the model


def test_identity(minilm: MiniLMEmbedder) -> None:
    assert isinstance(minilm, Embedder)
    assert minilm.id == MINILM_ID == "minilm-l6-v2@384"
    assert minilm.dim == MINILM_DIM == 384
    assert minilm.modalities == frozenset({"text"})


def test_encode_text_shape_dtype_unit_norm(minilm: MiniLMEmbedder) -> None:
    texts = ["a cat asleep on the sofa", "", "Nosferatu (1922). A vampire sails to Wisborg." * 40]
    v = minilm.encode_text(texts)
    assert v.shape == (3, 384)
    assert v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_empty_input_gives_empty_matrix(minilm: MiniLMEmbedder) -> None:
    v = minilm.encode_text([])
    assert v.shape == (0, 384)
    assert v.dtype == np.float32


def test_deterministic_and_independent_of_batching(minilm: MiniLMEmbedder) -> None:
    texts = [f"holiday photos from the beach, day {i}, with {'many ' * i}friends" for i in range(7)]
    whole = minilm.encode_text(texts)
    again = minilm.encode_text(texts)
    np.testing.assert_array_equal(whole, again)
    small = MiniLMEmbedder(batch_size=2)
    small._model = minilm._model  # the same weights, a different batch size
    one_by_one = np.vstack([minilm.encode_text([t]) for t in texts])
    np.testing.assert_allclose(small.encode_text(texts), whole, atol=1e-5)
    np.testing.assert_allclose(one_by_one, whole, atol=1e-5)
    # Different texts give different vectors.
    assert np.max(whole[0] @ whole[1:].T) < 0.9999


def test_meaning_not_spelling(minilm: MiniLMEmbedder) -> None:
    cat, kitten, market = minilm.encode_text(
        ["a cat sleeping on a sofa", "a kitten napping on the couch", "the stock market crashed on Monday"])
    assert _cos(cat, kitten) > _cos(cat, market) + 0.3


def test_bad_input_is_refused_clearly(minilm: MiniLMEmbedder) -> None:
    with pytest.raises(TypeError, match="list of strings, got a single string"):
        minilm.encode_text("just one string")
    with pytest.raises(TypeError, match=r"item 1 is int, expected str"):
        minilm.encode_text(["fine", 42])  # type: ignore[list-item]


@pytest.mark.parametrize("method, modality", [("encode_image", "image"), ("encode_video", "video"),
                                              ("encode_audio", "audio")])
def test_other_modalities_unsupported(minilm: MiniLMEmbedder, method: str, modality: str) -> None:
    with pytest.raises(UnsupportedModality, match=rf"minilm-l6-v2@384 cannot encode {modality}") as info:
        getattr(minilm, method)(["/tmp/x.jpg"])
    assert info.value.modality == modality
    assert info.value.supported == ("text",)
    assert "imagebind" in str(info.value)
    assert isinstance(info.value, EmbedError)


def test_constructor_validates() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        MiniLMEmbedder(batch_size=0)
    with pytest.raises(ValueError, match="num_threads"):
        MiniLMEmbedder(num_threads=0)


def test_incomplete_model_dir_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    e = MiniLMEmbedder(model_dir=tmp_path)
    with pytest.raises(EmbedError, match=r"incomplete: expected modules.json and model.safetensors"):
        e.encode_text(["hello"])
    assert not e.loaded


class _CountingMiniLM(MiniLMEmbedder):
    builds = 0

    def _build(self) -> Any:
        type(self).builds += 1
        return super()._build()


def test_concurrent_first_use_loads_once_and_agrees(minilm: MiniLMEmbedder) -> None:
    e = _CountingMiniLM()
    texts = [f"query number {i} about old films" for i in range(4)]
    results: dict[int, np.ndarray[Any, Any]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(i: int) -> None:
        try:
            start.wait()
            results[i] = e.encode_text(texts)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert _CountingMiniLM.builds == 1
    expected = minilm.encode_text(texts)
    for i in range(4):
        np.testing.assert_allclose(results[i], expected, atol=1e-5)


def test_hub_offline_sets_and_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    before = constants.HF_HUB_OFFLINE
    with hub_offline():
        assert os.environ["HF_HUB_OFFLINE"] == "1"
        assert os.environ["TRANSFORMERS_OFFLINE"] == "1"
        assert constants.HF_HUB_OFFLINE is True
    assert "HF_HUB_OFFLINE" not in os.environ
    assert os.environ["TRANSFORMERS_OFFLINE"] == "0"
    assert constants.HF_HUB_OFFLINE is before


@pytest.mark.slow
def test_loads_and_encodes_with_the_network_cut_off(tmp_path: Path) -> None:
    """A fresh process with an empty Hugging Face cache where every socket connect fails: still works."""
    script = textwrap.dedent("""
        import json, os, socket, sys
        attempts = []
        def deny(*args, **kwargs):
            attempts.append(repr(args[1:] if args else kwargs))
            raise OSError("network disabled by the test")
        socket.socket.connect = deny
        socket.socket.connect_ex = deny
        socket.create_connection = deny
        from bitharbord.embed.minilm import MiniLMEmbedder
        v = MiniLMEmbedder(num_threads=1).encode_text(["a train chase in the civil war"])
        print(json.dumps({"shape": list(v.shape), "norm": float((v ** 2).sum()), "attempts": attempts,
                          "offline_after": os.environ.get("HF_HUB_OFFLINE")}))
    """)
    hf_home = tmp_path / "hf"
    env = {**os.environ, "HF_HOME": str(hf_home), "PYTHONPATH": str(REPO)}
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=240, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["shape"] == [1, 384]
    assert abs(out["norm"] - 1.0) < 1e-4
    assert out["attempts"] == []
    assert out["offline_after"] is None
    downloaded = [p for p in hf_home.rglob("*") if p.is_file()] if hf_home.exists() else []
    assert downloaded == []


# --------------------------------------------------------------------------- the factory


def test_factory_default_is_minilm() -> None:
    e = load_embedder(Embedding())
    assert isinstance(e, MiniLMEmbedder)
    assert e.id == MINILM_ID
    assert not e.loaded  # cheap: loading waits for first use


def test_factory_imagebind_missing_checkpoint_is_reported_up_front(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "imagebind_huge.pth"
    with pytest.raises(EmbedError, match=rf"{missing} is not a file.*nothing is downloaded"):
        load_embedder(Embedding(backend="imagebind", checkpoint=str(missing)))
