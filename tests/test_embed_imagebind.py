"""ImageBind: our loader, transforms and forward pass on a tiny ImageBindModel saved to a real checkpoint file.

Needs the optional `imagebind` package (imagebind-unofficial and its torch stack, in .venv-imagebind); the
module is skipped only when that package is absent. Run it with:
    .venv-imagebind/bin/python -m pytest -q tests/test_embed_imagebind.py
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import socket
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# Skip only when the package is absent. (Not importorskip: importing `imagebind` bare fails on pytorchvideo's
# old torchvision import until our loader installs its shim, and that failure must fail the run, not skip it.)
if importlib.util.find_spec("imagebind") is None:
    pytest.skip("the optional imagebind-unofficial package is not installed here", allow_module_level=True)

import torch
from PIL import Image

from bitharbord.config import Embedding
from bitharbord.embed.base import Embedder, EmbedError, file_fingerprint
from bitharbord.embed.imagebind import IMAGEBIND_HUGE, ImageBindEmbedder
from bitharbord.embed.imagebind_setup import import_imagebind
from bitharbord.embed.loader import load_embedder
from tests.imagebind_tiny import TINY, save_tiny

RATE = 16_000


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("imagebind")


@pytest.fixture(scope="module")
def reference(workdir: Path) -> torch.nn.Module:
    """A tiny ImageBindModel built the ordinary way; its state_dict is the checkpoint under test."""
    return save_tiny(workdir / "tiny.pth")


@pytest.fixture(scope="module")
def checkpoint(reference: torch.nn.Module, workdir: Path) -> Path:
    return workdir / "tiny.pth"


@pytest.fixture(scope="module")
def embedder(checkpoint: Path) -> ImageBindEmbedder:
    e = ImageBindEmbedder(checkpoint, arch=TINY, name="tiny", batch_size=2, num_threads=1)
    e.load()
    return e


@pytest.fixture(scope="module")
def images(workdir: Path) -> list[Path]:
    """Three real image files: a horizontal gradient, a vertical one in other colours, a greyscale checkerboard."""
    x = np.linspace(0, 255, 320, dtype=np.float32)
    a = np.stack([np.tile(x, (200, 1)), np.tile(x[::-1], (200, 1)), np.full((200, 320), 60.0)], axis=-1)
    b = np.stack([np.full((300, 240), 200.0), np.tile(np.linspace(0, 255, 300)[:, None], (1, 240)),
                  np.full((300, 240), 30.0)], axis=-1)
    c = ((np.indices((256, 256)).sum(axis=0) // 32) % 2 * 255).astype(np.uint8)
    paths = [workdir / "a.png", workdir / "b.jpg", workdir / "c.png"]
    Image.fromarray(a.astype(np.uint8)).save(paths[0])
    Image.fromarray(b.astype(np.uint8)).save(paths[1], quality=95)
    Image.fromarray(c, mode="L").save(paths[2])
    return paths


def _tone(freq: float, seconds: float, rate: int = RATE) -> np.ndarray[Any, Any]:
    t = np.arange(int(seconds * rate)) / rate
    tone: np.ndarray[Any, Any] = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return tone


def _pcm16(samples: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    pcm: np.ndarray[Any, Any] = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    return pcm


def _write_wav(path: Path, samples: np.ndarray[Any, Any], rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(_pcm16(samples).tobytes())
    return path


def _unit(v: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.asarray(v / np.linalg.norm(v, axis=1, keepdims=True), dtype=np.float32)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    attempts: list[str] = []

    def deny(*args: Any, **kwargs: Any) -> Any:
        attempts.append(repr(args[1:]))
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", deny)
    monkeypatch.setattr(socket.socket, "connect_ex", deny)
    monkeypatch.setattr(socket, "create_connection", deny)
    yield attempts


# --------------------------------------------------------------------------- loading


def test_loads_every_tensor_from_the_checkpoint_without_network(
        checkpoint: Path, reference: torch.nn.Module, no_network: list[str]) -> None:
    e = ImageBindEmbedder(checkpoint, arch=TINY, name="tiny", num_threads=1)
    assert not e.loaded
    e.load()
    assert e.loaded
    assert isinstance(e, Embedder)
    assert e.id == f"imagebind-tiny-{file_fingerprint(checkpoint)}@24" and e.dim == 24
    assert e.modalities == frozenset({"text", "image", "video", "audio"})
    ours = e._model.state_dict()
    theirs = reference.state_dict()
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert not ours[key].is_meta, key
        assert torch.equal(ours[key], value), key
    assert no_network == []


def test_text_matches_the_reference_pipeline(embedder: ImageBindEmbedder, reference: torch.nn.Module) -> None:
    _, data = import_imagebind()
    texts = ["a dog playing in the snow", "a red car", "a dog playing in the snow at night",
             "word " * 200]  # longer than 77 tokens: truncated, still ends with the end token
    ours = embedder.encode_text(texts)
    with torch.inference_mode():
        raw = reference({"text": data.load_and_transform_text(texts, "cpu")})["text"].numpy()
    # ImageBind scales its text output (learned logit scale); ours is unit length, same direction.
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    assert ours.shape == (4, 24) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(ours, _unit(raw), atol=1e-5)


def test_images_match_the_reference_pipeline(embedder: ImageBindEmbedder, reference: torch.nn.Module,
                                             images: list[Path]) -> None:
    _, data = import_imagebind()
    ours = embedder.encode_image(images)  # batch_size 2: two batches
    with torch.inference_mode():
        raw = reference({"vision": data.load_and_transform_vision_data([str(p) for p in images], "cpu")})
    assert ours.shape == (3, 24)
    np.testing.assert_allclose(ours, _unit(raw["vision"].numpy()), atol=1e-5)
    # A decoded PIL image gives the same vector as its file.
    pil = Image.open(images[1])
    np.testing.assert_allclose(embedder.encode_image([pil]), ours[1:2], atol=1e-6)


def test_exif_orientation_is_applied(embedder: ImageBindEmbedder, images: list[Path], tmp_path: Path) -> None:
    upright = Image.open(images[0]).convert("RGB")
    sideways = upright.transpose(Image.Transpose.ROTATE_90)  # what the sensor wrote ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... and the tag saying "rotate 90° clockwise to view"
    tagged = tmp_path / "portrait.png"
    sideways.save(tagged, exif=exif)
    plain = tmp_path / "upright.png"
    upright.save(plain)
    v = embedder.encode_image([tagged, plain, sideways])
    np.testing.assert_allclose(v[0], v[1], atol=1e-6)
    assert np.abs(v[0] - v[2]).max() > 1e-3


def test_deterministic_and_distinct(embedder: ImageBindEmbedder, checkpoint: Path, images: list[Path]) -> None:
    texts = ["beach at sunset", "snowy mountain", "birthday cake"]
    t1, t2 = embedder.encode_text(texts), embedder.encode_text(texts)
    np.testing.assert_array_equal(t1, t2)
    fresh = ImageBindEmbedder(checkpoint, arch=TINY, name="tiny", batch_size=8, num_threads=1)
    np.testing.assert_allclose(fresh.encode_text(texts), t1, atol=1e-5)
    np.testing.assert_allclose(fresh.encode_image(images), embedder.encode_image(images), atol=1e-5)
    for vecs in (t1, embedder.encode_image(images)):
        sims = vecs @ vecs.T
        assert np.max(sims[~np.eye(len(vecs), dtype=bool)]) < 0.999


def test_audio_file_and_waveform(embedder: ImageBindEmbedder, workdir: Path) -> None:
    low, high = _tone(220, 3.0), _tone(1760, 3.0)
    wav = _write_wav(workdir / "low.wav", low)
    low = _pcm16(low).astype(np.float32) / 32768  # what the 16-bit file holds, as decoders scale it
    stereo_44k = np.stack([_tone(220, 3.0, 44_100), _tone(220, 3.0, 44_100)])
    v = embedder.encode_audio([wav, (low, RATE), (high, RATE), (stereo_44k, 44_100), (_tone(440, 0.5), RATE)])
    assert v.shape == (5, 24) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    dist = np.linalg.norm(v[:, None] - v[None], axis=-1)
    # A random tiny model maps every sound near one point, so compare distances with each other:
    # the file decodes (PyAV) to the waveform it was written from ...
    assert dist[0, 1] < 1e-5
    # ... 44.1 kHz stereo of the same tone, downmixed and resampled, lands close to it ...
    assert dist[3, 1] < dist[1, 2] / 3
    # ... and other tones are other vectors.
    assert dist[1, 2] > 10 * dist[0, 1] and dist[1, 4] > 10 * dist[0, 1]
    np.testing.assert_array_equal(embedder.encode_audio([(low, RATE)]), embedder.encode_audio([(low, RATE)]))


def test_audio_matches_imagebinds_own_clip_and_mel_steps(embedder: ImageBindEmbedder,
                                                         reference: torch.nn.Module) -> None:
    """The reference loader's steps after torchaudio.load (which needs torchcodec), on the same waveform."""
    _, data = import_imagebind()
    sampling = importlib.import_module("pytorchvideo.data.clip_sampling")  # untyped, absent from the main venv
    transforms = importlib.import_module("torchvision.transforms")

    samples = _tone(330, 4.5) + 0.1 * _tone(50, 4.5)
    waveform = torch.from_numpy(samples)[None]
    sampler = sampling.ConstantClipsPerVideoSampler(clip_duration=2, clips_per_video=3)
    clips = []
    for start, end in data.get_clip_timepoints(sampler, waveform.size(1) / RATE):
        part = waveform[:, int(start * RATE):int(end * RATE)].clone()
        clips.append(transforms.Normalize(mean=-4.268, std=9.138)(data.waveform2melspec(part, RATE, 128, 204)))
    with torch.inference_mode():
        raw = reference({"audio": torch.stack(clips)[None]})["audio"].numpy()
    np.testing.assert_allclose(embedder.encode_audio([(samples, RATE)]), _unit(raw), atol=1e-5)


def test_video_frames(embedder: ImageBindEmbedder, images: list[Path]) -> None:
    frames = [Image.open(p).convert("RGB").resize((320, 240)) for p in images]
    v = embedder.encode_video([frames, frames[::-1], [images[0]], frames * 6])
    assert v.shape == (4, 24)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert float(v[0] @ v[1]) < 0.9999  # order matters: the clips are built from consecutive frames
    np.testing.assert_array_equal(embedder.encode_video([frames]), v[:1])
    three = ImageBindEmbedder(embedder.checkpoint, arch=TINY, name="tiny", video_crops=3, num_threads=1)
    assert three.encode_video([frames]).shape == (1, 24)


def test_empty_inputs(embedder: ImageBindEmbedder) -> None:
    for method in (embedder.encode_text, embedder.encode_image, embedder.encode_video, embedder.encode_audio):
        out = method([])
        assert out.shape == (0, 24) and out.dtype == np.float32


# --------------------------------------------------------------------------- bad input, clear errors


def test_bad_inputs_are_named(embedder: ImageBindEmbedder, workdir: Path) -> None:
    junk = workdir / "junk.jpg"
    junk.write_bytes(b"not an image")
    with pytest.raises(EmbedError, match=rf"image 1 {junk}: cannot read as an image"):
        embedder.encode_image([workdir / "a.png", junk])
    with pytest.raises(TypeError, match="expects a list of strings"):
        embedder.encode_text("one string")
    with pytest.raises(TypeError, match=r"item 1 is int"):
        embedder.encode_text(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(EmbedError, match=r"audio 0: 0.010 s of sound"):
        embedder.encode_audio([(np.zeros(160, dtype=np.float32), RATE)])
    with pytest.raises(EmbedError, match=r"audio 0 .*junk.jpg: (cannot decode|the file has no audio stream)"):
        embedder.encode_audio([junk])
    with pytest.raises(EmbedError, match="no such file"):
        embedder.encode_audio([workdir / "missing.wav"])
    with pytest.raises(EmbedError, match="video 0: no frames"):
        embedder.encode_video([[]])


def test_missing_corrupt_and_mismatched_checkpoints(tmp_path: Path, checkpoint: Path) -> None:
    with pytest.raises(EmbedError, match=r"is not a file .*nothing is downloaded"):
        ImageBindEmbedder(tmp_path / "none.pth", arch=TINY, name="tiny").load()
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(EmbedError, match=r"could not read ImageBind checkpoint"):
        ImageBindEmbedder(corrupt, arch=TINY, name="tiny").load()
    other = dict(TINY, out_embed_dim=16)
    with pytest.raises(EmbedError, match=r"does not fit the tiny16 architecture: .*another shape"):
        ImageBindEmbedder(checkpoint, arch=other, name="tiny16").load()
    # The factory builds the huge architecture: a tiny checkpoint is refused with the reason.
    e = load_embedder(Embedding(backend="imagebind", checkpoint=str(checkpoint)))
    assert isinstance(e, ImageBindEmbedder) and e.arch == dict(IMAGEBIND_HUGE)
    assert re.fullmatch(r"imagebind-huge-[0-9a-f]{12}@1024", e.id)  # named by the checkpoint's content
    with pytest.raises(EmbedError, match="does not fit the huge architecture"):
        e.load()
    assert not e.loaded


def test_wrapped_state_dict_with_module_prefix(tmp_path: Path, reference: torch.nn.Module,
                                               embedder: ImageBindEmbedder) -> None:
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": {f"module.{k}": v for k, v in reference.state_dict().items()}}, wrapped)
    e = ImageBindEmbedder(wrapped, arch=TINY, name="tiny", num_threads=1)
    np.testing.assert_allclose(e.encode_text(["a cat"]), embedder.encode_text(["a cat"]), atol=1e-6)
