"""Meta's ImageBind (text, images, video frames, audio in one 1024-d space) from a local checkpoint.

Uses the model code of the `imagebind-unofficial` package (an optional extra: it needs its own torch, see the
README's install notes). That package's `imagebind_huge(pretrained=True)` ignores paths and downloads into
./.checkpoints, so it is never called: we build `ImageBindModel(**arch)` and load the checkpoint named in
harbor.yaml ourselves, with `torch.load(weights_only=True)`. Nothing is ever fetched.

Loading: the model is built with its parameters on the meta device (no 26 s random initialisation of 1.2B
parameters) and the checkpoint, memory-mapped, is assigned into it; every parameter and buffer must come from
the file (bitharbord/embed/imagebind_setup.py does the loading steps).

Outputs: ImageBind scales text (by a learned ~14), audio (x20), ... ; every vector returned here is
L2-normalised, so cosine similarity across modalities is a dot product.

Preprocessing follows `imagebind.data`: images Resize(224, bicubic) + CenterCrop(224) + CLIP normalisation;
text the CLIP BPE tokenizer, 77 tokens; audio mono 16 kHz, 3 clips of 2 s, 128-bin log-mel (kaldi fbank),
204 frames, normalised; video clips of 2 frames, short side scaled to 224, CLIP normalisation, spatial crops
(1 centre crop by default: 3 as in the paper triples the cost on a small CPU), averaged over clips."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import structlog

from bitharbord.embed.base import (
    AudioInput,
    EmbedError,
    ImageInput,
    Modality,
    Vectors,
    VideoInput,
    batches,
    default_threads,
    empty,
    file_fingerprint,
    l2_normalise,
)
from bitharbord.embed.imagebind_setup import import_imagebind, model_mod_tokenizer, parameters_on_meta, state_dict_of

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = structlog.get_logger("bitharbord.embed.imagebind")

IMAGEBIND_HUGE: Mapping[str, Any] = {
    "vision_embed_dim": 1280,
    "vision_num_blocks": 32,
    "vision_num_heads": 16,
    "text_embed_dim": 1024,
    "text_num_blocks": 24,
    "text_num_heads": 16,
    "out_embed_dim": 1024,
    "audio_drop_path": 0.1,
    "imu_drop_path": 0.7,
}
"""The arguments `imagebind_huge()` passes to ImageBindModel; the released checkpoint fits them."""

_DEFAULT_OUT_DIM = 768  # ImageBindModel's own default out_embed_dim
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
AUDIO_RATE = 16_000
AUDIO_CLIP_S = 2
AUDIO_CLIPS = 3
AUDIO_MEAN = -4.268
AUDIO_STD = 9.138
MIN_AUDIO_S = 0.05  # the fbank needs at least one 25 ms frame; shorter than this is not a sound worth indexing


class ImageBindEmbedder:
    """ImageBind from a local checkpoint: text, image, video (frames) and audio in one space."""

    modalities: frozenset[Modality] = frozenset({"text", "image", "video", "audio"})

    def __init__(self, checkpoint: Path | str, *, arch: Mapping[str, Any] | None = None, name: str = "huge",
                 batch_size: int = 8, video_crops: int = 1, max_video_clips: int = 5,
                 num_threads: int | None = None) -> None:
        if arch is None and name != "huge":
            raise ValueError("a custom name needs its arch (the ImageBindModel arguments of the checkpoint)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if video_crops not in (1, 3):
            raise ValueError(f"video_crops must be 1 (centre) or 3 (left, centre, right), got {video_crops}")
        if max_video_clips < 1:
            raise ValueError(f"max_video_clips must be at least 1, got {max_video_clips}")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be at least 1, got {num_threads}")
        self.checkpoint = Path(checkpoint)
        self.arch: dict[str, Any] = dict(IMAGEBIND_HUGE if arch is None else arch)
        self.name = name
        self.batch_size = batch_size
        self.video_crops = video_crops
        self.max_video_clips = max_video_clips
        self.num_threads = num_threads if num_threads is not None else default_threads()
        self._dim = int(self.arch.get("out_embed_dim", _DEFAULT_OUT_DIM))
        self._mel_bins = int(self.arch.get("audio_num_mel_bins", 128))
        self._audio_frames = int(self.arch.get("audio_target_len", 204))
        self._video_frames = int(self.arch.get("video_frames", 2))
        self._model: Any = None
        self._data: Any = None
        self._tokenizer: Any = None
        self._image_transform: Any = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    # ----------------------------------------------------------------------- identity

    @property
    def id(self) -> str:
        """imagebind-<name>-<checkpoint fingerprint>@<dim>: vectors of other weights never share a store."""
        try:
            return f"imagebind-{self.name}-{file_fingerprint(self.checkpoint)}@{self._dim}"
        except OSError:
            return f"imagebind-{self.name}@{self._dim}"  # no checkpoint (load() says why): encodes nothing

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def arch_digest(self) -> str:
        return hashlib.sha256(json.dumps(self.arch, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def loaded(self) -> bool:
        return self._model is not None

    # ----------------------------------------------------------------------- loading

    def load(self) -> None:
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is None:
                self._build()

    def _build(self) -> None:
        if not self.checkpoint.is_file():
            raise EmbedError(
                f"ImageBind checkpoint {self.checkpoint} is not a file (it is loaded only from local disk; "
                "nothing is downloaded)"
            )
        t0 = time.monotonic()
        model_mod, data_mod = import_imagebind()
        import torch
        transforms = importlib.import_module("torchvision.transforms")

        torch.set_num_threads(self.num_threads)
        t_import = time.monotonic() - t0
        try:
            try:
                raw = torch.load(self.checkpoint, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):
                    raise
                raw = torch.load(self.checkpoint, map_location="cpu", weights_only=True)  # legacy format
        except EmbedError:
            raise
        except Exception as e:
            raise EmbedError(
                f"could not read ImageBind checkpoint {self.checkpoint}: {type(e).__name__}: {e}"
            ) from e
        state = state_dict_of(raw, self.checkpoint)
        t_read = time.monotonic() - t0 - t_import

        try:
            with parameters_on_meta():
                model = model_mod.ImageBindModel(**self.arch)
        except TypeError as e:
            raise EmbedError(f"ImageBind arch {self.arch} is not valid for ImageBindModel: {e}") from e
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
        if missing or unexpected or wrong:
            parts = []
            if missing:
                parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
            if wrong:
                k = wrong[0]
                parts.append(f"{len(wrong)} of another shape (e.g. {k}: checkpoint "
                             f"{tuple(state[k].shape)}, model {tuple(expected[k].shape)})")
            raise EmbedError(
                f"ImageBind checkpoint {self.checkpoint} does not fit the {self.name} architecture: "
                + "; ".join(parts)
            )
        model.load_state_dict(state, strict=True, assign=True)
        leftovers = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if leftovers:  # pragma: no cover - the key check above makes this impossible
            raise EmbedError(f"ImageBind checkpoint {self.checkpoint} left {leftovers[:3]} uninitialised")
        model.eval()
        model.requires_grad_(False)

        self._data = data_mod
        self._tokenizer = model_mod_tokenizer(data_mod)
        self._image_transform = transforms.Compose([
            transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=CLIP_MEAN, std=CLIP_STD),
        ])
        self._model = model
        n_params = sum(p.numel() for p in model.parameters())
        log.info("embed.load", embedder=self.id, path=str(self.checkpoint), params=n_params,
                 threads=self.num_threads, import_s=round(t_import, 2), read_s=round(t_read, 2),
                 total_s=round(time.monotonic() - t0, 2))

    # ----------------------------------------------------------------------- running the model

    def _forward(self, modality: str, inputs: torch.Tensor) -> npt.NDArray[np.float32]:
        import torch

        with self._run_lock, torch.inference_mode():
            out = self._model({modality: inputs})[modality]
        return np.asarray(out.float().numpy(), dtype=np.float32)

    def _run_batched(self, modality: str, items: Sequence[Any], prepare: Any, kind: str) -> Vectors:
        import torch

        if isinstance(items, (str, bytes, os.PathLike)) or not isinstance(items, Sequence):
            raise TypeError(f"{self.id}.encode_{kind} expects a list, got {type(items).__name__}")
        items = list(items)
        if not items:
            return empty(self.dim)
        self.load()
        t0 = time.monotonic()
        parts = []
        for part in batches(len(items), self.batch_size):
            tensors = [prepare(item, part.start + i) for i, item in enumerate(items[part])]
            parts.append(self._forward(modality, torch.stack(tensors, dim=0)))
        vectors = l2_normalise(np.concatenate(parts, axis=0))
        log.debug("embed.encode", embedder=self.id, modality=kind, n=len(items),
                  seconds=round(time.monotonic() - t0, 3))
        return vectors

    # ----------------------------------------------------------------------- text

    def encode_text(self, texts: Sequence[str]) -> Vectors:
        def prepare(text: Any, i: int) -> torch.Tensor:
            if not isinstance(text, str):
                raise TypeError(f"{self.id}.encode_text: item {i} is {type(text).__name__}, expected str")
            tokens: torch.Tensor = self._tokenizer(text)
            return tokens if tokens.ndim == 1 else tokens[0]

        if isinstance(texts, str):
            raise TypeError(f"{self.id}.encode_text expects a list of strings, got a single string")
        return self._run_batched("text", texts, prepare, "text")

    # ----------------------------------------------------------------------- images

    def _open_image(self, item: ImageInput, what: str) -> Image.Image:
        from PIL import Image, ImageOps

        if isinstance(item, Image.Image):
            image = item
        elif isinstance(item, (str, os.PathLike)):
            try:
                with Image.open(item) as opened:
                    # Phones store portraits sideways with an Orientation tag: embed what a person sees.
                    image = ImageOps.exif_transpose(opened) or opened.copy()
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                raise EmbedError(f"{what} {os.fspath(item)}: cannot read as an image: {e}") from e
        else:
            raise TypeError(f"{what} is {type(item).__name__}, expected a file path or a PIL image")
        return image.convert("RGB")

    def encode_image(self, images: Sequence[ImageInput]) -> Vectors:
        def prepare(item: ImageInput, i: int) -> torch.Tensor:
            image = self._open_image(item, f"image {i}")
            tensor: torch.Tensor = self._image_transform(image)
            return tensor

        return self._run_batched("vision", images, prepare, "image")

    # ----------------------------------------------------------------------- video

    def _video_tensor(self, frames: VideoInput, i: int) -> torch.Tensor:
        """(clips x crops, C, T, 224, 224) for one video given as frames in time order."""
        import torch
        pil_to_tensor = importlib.import_module("torchvision.transforms.functional").pil_to_tensor

        if isinstance(frames, (str, bytes, os.PathLike)) or not isinstance(frames, Sequence):
            raise TypeError(f"video {i}: expected a list of frames (paths or PIL images), got "
                            f"{type(frames).__name__}")
        if not frames:
            raise EmbedError(f"video {i}: no frames given")
        t = self._video_frames
        n_wanted = t * self.max_video_clips
        picks = list(range(len(frames)))
        if len(picks) > n_wanted:
            picks = sorted(set(np.linspace(0, len(frames) - 1, n_wanted).round().astype(int).tolist()))
        opened = [self._open_image(frames[j], f"video {i} frame {j}") for j in picks]
        size = opened[0].size
        opened = [im if im.size == size else im.resize(size) for im in opened]
        while len(opened) % t:
            opened.append(opened[-1])  # the last clip is completed by holding its last frame
        pv = importlib.import_module("pytorchvideo.transforms")
        scale = pv.ShortSideScale(224)
        normalise = self._data.NormalizeVideo(mean=CLIP_MEAN, std=CLIP_STD)
        clips = []
        for c in range(0, len(opened), t):
            clip = torch.stack([pil_to_tensor(im) for im in opened[c:c + t]], dim=1).float() / 255.0  # C,T,H,W
            clips.append(normalise(scale(clip)))
        crops = self._data.SpatialCrop(224, num_crops=self.video_crops)(clips)
        return torch.stack(crops, dim=0)

    def encode_video(self, videos: Sequence[VideoInput]) -> Vectors:
        if isinstance(videos, (str, bytes)):
            raise TypeError(f"{self.id}.encode_video expects a list of videos (each a list of frames)")
        items = list(videos)
        if not items:
            return empty(self.dim)
        self.load()
        t0 = time.monotonic()
        # Videos differ in clip count, so each is one forward pass; the model averages over its clips.
        rows = [self._forward("vision", self._video_tensor(frames, i)[None]) for i, frames in enumerate(items)]
        vectors = l2_normalise(np.concatenate(rows, axis=0))
        log.debug("embed.encode", embedder=self.id, modality="video", n=len(items),
                  seconds=round(time.monotonic() - t0, 3))
        return vectors

    # ----------------------------------------------------------------------- audio

    def _waveform(self, item: AudioInput, i: int) -> torch.Tensor:
        """Mono float32 at 16 kHz, shape (1, samples)."""
        import torch
        audio_functional = importlib.import_module("torchaudio.functional")

        if isinstance(item, tuple):
            if len(item) != 2:
                raise TypeError(f"audio {i}: expected (waveform, sample_rate), got a tuple of {len(item)}")
            samples, rate = item
            arr = np.asarray(samples, dtype=np.float32)
            if arr.ndim == 1:
                arr = arr[None]
            if arr.ndim != 2 or arr.shape[1] == 0:
                raise EmbedError(f"audio {i}: waveform of shape {arr.shape}; expected (samples,) or "
                                 "(channels, samples) with samples > 0")
            if not isinstance(rate, (int, np.integer)) or rate <= 0:
                raise EmbedError(f"audio {i}: sample rate {rate!r}, expected a positive integer")
            wave = torch.from_numpy(np.ascontiguousarray(arr.mean(axis=0, keepdims=True)))
            if int(rate) != AUDIO_RATE:
                wave = audio_functional.resample(wave, orig_freq=int(rate), new_freq=AUDIO_RATE)
        elif isinstance(item, (str, os.PathLike)):
            wave = torch.from_numpy(_decode_audio_file(Path(item), i))
        else:
            raise TypeError(f"audio {i} is {type(item).__name__}, expected a file path or (waveform, rate)")
        if not torch.isfinite(wave).all():
            raise EmbedError(f"audio {i}: waveform holds NaN or infinite samples")
        if wave.shape[1] < MIN_AUDIO_S * AUDIO_RATE:
            raise EmbedError(f"audio {i}: {wave.shape[1] / AUDIO_RATE:.3f} s of sound, need at least "
                             f"{MIN_AUDIO_S} s")
        return wave

    def _audio_tensor(self, item: AudioInput, i: int) -> torch.Tensor:
        """(clips, 1, mel_bins, frames): ImageBind's 3 evenly spread 2 s clips as normalised log-mel images."""
        import torch

        transforms = importlib.import_module("torchvision.transforms")
        wave = self._waveform(item, i)
        pv_sampling = importlib.import_module("pytorchvideo.data.clip_sampling")
        sampler = pv_sampling.ConstantClipsPerVideoSampler(clip_duration=AUDIO_CLIP_S,
                                                           clips_per_video=AUDIO_CLIPS)
        timepoints = self._data.get_clip_timepoints(sampler, wave.shape[1] / AUDIO_RATE)
        normalise = transforms.Normalize(mean=AUDIO_MEAN, std=AUDIO_STD)
        mels = []
        for start, end in timepoints:
            # waveform2melspec centres its input in place: give it a copy.
            clip = wave[:, int(start * AUDIO_RATE):int(end * AUDIO_RATE)].clone()
            mel = self._data.waveform2melspec(clip, AUDIO_RATE, self._mel_bins, self._audio_frames)
            mels.append(normalise(mel))
        return torch.stack(mels, dim=0)

    def encode_audio(self, clips: Sequence[AudioInput]) -> Vectors:
        return self._run_batched("audio", clips, self._audio_tensor, "audio")


def _decode_audio_file(path: Path, i: int) -> npt.NDArray[np.float32]:
    """Any audio (or a video's first audio track) PyAV can read, as mono float32 at 16 kHz, shape (1, n)."""
    try:
        av = importlib.import_module("av")
    except ImportError as e:  # pragma: no cover - a dependency of pytorchvideo
        raise EmbedError("decoding audio files needs PyAV (pip install av)") from e
    if not path.is_file():
        raise EmbedError(f"audio {i} {path}: no such file")
    chunks: list[npt.NDArray[np.float32]] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise EmbedError(f"audio {i} {path}: the file has no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except EmbedError:
        raise
    except Exception as e:
        raise EmbedError(f"audio {i} {path}: cannot decode: {type(e).__name__}: {e}") from e
    if not chunks:
        raise EmbedError(f"audio {i} {path}: the audio stream is empty")
    return np.concatenate(chunks).astype(np.float32)[None]
