"""A tiny ImageBindModel (Meta's architecture, small widths, the real input sizes) for tests that need a real
checkpoint file: 224x224 images, 2-frame clips, 128x204 mel images, 77 tokens. Needs the optional imagebind
package (.venv-imagebind)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bitharbord.embed.imagebind_setup import import_imagebind

TINY: dict[str, Any] = dict(
    video_frames=2, out_embed_dim=24,
    vision_embed_dim=32, vision_num_blocks=1, vision_num_heads=2,
    audio_embed_dim=32, audio_num_blocks=1, audio_num_heads=2,
    text_embed_dim=32, text_num_blocks=1, text_num_heads=2,
    depth_embed_dim=16, depth_num_blocks=1, depth_num_heads=2,
    thermal_embed_dim=16, thermal_num_blocks=1, thermal_num_heads=2,
    imu_embed_dim=16, imu_num_blocks=1, imu_num_heads=2,
)


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Make every parameter non-trivial (ImageBind zero-initialises a few, e.g. class tokens)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def save_tiny(path: Path, arch: dict[str, Any] = TINY, seed: int = 1) -> torch.nn.Module:
    """Build the model the ordinary way, randomise it, save its state_dict to `path`; returns the model."""
    model_mod, _ = import_imagebind()
    torch.manual_seed(0)
    model: torch.nn.Module = model_mod.ImageBindModel(**arch)
    randomise(model, seed)
    model.eval()
    torch.save(model.state_dict(), path)
    return model
