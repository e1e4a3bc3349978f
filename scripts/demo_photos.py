"""Write a few sample photos for the demo: real JPEGs (Pillow) with EXIF capture times and descriptive names.

    .venv/bin/python scripts/demo_photos.py DIR

The default embedder (MiniLM) embeds each item's metadata: the file name, the capture date, the camera. So
`bitharborctl search "photos of the beach at sunset"` finds beach-at-sunset.jpg by meaning, not by keyword."""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from pathlib import Path

from PIL import Image, ImageDraw
from PIL.ExifTags import Base

PHOTOS = {  # name: (sky, ground, taken)
    "beach-at-sunset": ((250, 140, 60), (230, 200, 140), datetime(2024, 7, 14, 20, 41)),
    "birthday-cake-with-candles": ((90, 60, 60), (240, 230, 220), datetime(2024, 3, 2, 16, 5)),
    "snowy-mountain-hike": ((170, 200, 240), (245, 245, 250), datetime(2023, 12, 28, 11, 30)),
    "cat-asleep-on-the-sofa": ((120, 110, 100), (150, 90, 70), datetime(2024, 9, 8, 14, 12)),
    "city-lights-at-night": ((10, 10, 40), (60, 60, 80), datetime(2024, 11, 1, 22, 3)),
    "waterfall-in-the-forest": ((60, 120, 70), (40, 90, 140), datetime(2024, 5, 19, 10, 47)),
}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    settled = time.time() - 60  # older than the daemon's settle window: ingested at once
    for name, (sky, ground, taken) in PHOTOS.items():
        img = Image.new("RGB", (640, 427), sky)
        ImageDraw.Draw(img).rectangle((0, 260, 640, 427), fill=ground)
        exif = Image.Exif()
        exif[Base.Make], exif[Base.Model] = "Demo", "Camera"
        exif[Base.DateTime] = taken.strftime("%Y:%m:%d %H:%M:%S")
        exif.get_ifd(0x8769)[Base.DateTimeOriginal] = taken.strftime("%Y:%m:%d %H:%M:%S")
        path = out / f"{name}.jpg"
        img.save(path, quality=85, exif=exif)
        os.utime(path, (settled, settled))
    print(f"wrote {len(PHOTOS)} photos to {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
