"""How the nearest-neighbour search (bitharbord/index/nearest.py) and its rebuilds are tuned: `SearchConfig`,
from harbor.yaml's `index` section, and the backends' default search widths.

`ann_dtype="int8"` keeps a reduced-precision copy in the ANN index (DiskANN only: a quarter of fp32; diskannpy
has no fp16 and hnswlib stores fp32 only); re-ranking always reads the fp32 rows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# The search width when harbor.yaml sets none (else the backend's own default, raised to the `rerank` pool).
# hnsw at 1M x 1024-d on 2 cores (bench/search.py), builds of the same data (hnswlib's threaded inserts make
# each graph differ): in row order, ef 100 gave recall@10 0.976 / 0.986 / 0.980 / 0.979, ef 128 0.987-0.993;
# in locality order (locality.py) 0.985 and 0.992, at ~0.1 ms more per query for 128.
DEFAULT_WIDTH: dict[str, int] = {"hnsw": 128}


@dataclass(frozen=True)
class SearchConfig:
    backend: str = "hnsw"
    ann_params: Mapping[str, Any] = field(default_factory=dict)
    ann_dtype: Literal["float32", "int8"] = "float32"
    rerank: int = 100
    width: int | None = None
    type_scan_limit: int = 20_000
    type_index_max_fraction: float = 0.2
    overfetch_cap: int = 4096
    rebuild_threshold: int = 10_000
    rebuild_fraction: float = 0.05
    rebuild_min_rows: int = 1_000
    tombstone_fraction: float = 0.1
    incremental: bool = True
    num_threads: int | None = None

    def __post_init__(self) -> None:
        if self.backend not in ("hnsw", "diskann", "flat"):
            raise ValueError(f"index backend: {self.backend!r} is not one of diskann, flat, hnsw")
        if self.ann_dtype not in ("float32", "int8"):
            raise ValueError(f"ann_dtype: expected 'float32' or 'int8', got {self.ann_dtype!r}")
        if self.ann_dtype == "int8" and self.backend != "diskann":
            raise ValueError(f"ann_dtype int8 (reduced-precision ANN storage): the {self.backend} backend stores "
                             "float32 only; use backend diskann or ann_dtype float32")
        for name in ("rerank", "rebuild_threshold", "overfetch_cap"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)!r}")
        if self.type_scan_limit < 0 or self.rebuild_min_rows < 0:
            raise ValueError("type_scan_limit and rebuild_min_rows must not be negative")
        for name in ("rebuild_fraction", "tombstone_fraction"):
            if not 0 < float(getattr(self, name)) <= 1:
                raise ValueError(f"{name}: expected a fraction in (0, 1], got {getattr(self, name)!r}")
        if not 0 <= self.type_index_max_fraction <= 1:
            raise ValueError(f"type_index_max_fraction: expected 0..1, got {self.type_index_max_fraction!r}")

    @classmethod
    def from_settings(cls, index: Any, **overrides: Any) -> SearchConfig:
        """From the harbor.yaml `index` section (bitharbord.config.Index: backend, rebuild_threshold,
        rebuild_fraction, fp16, search_width). fp16 asks for reduced-precision ANN storage, which is int8 on
        DiskANN; search_width is hnsw's ef / diskann's L (wider: better recall, slower)."""
        fp16 = bool(getattr(index, "fp16", False))
        backend = str(index.backend)
        if fp16 and backend != "diskann":
            raise ValueError(f"index.fp16: reduced-precision ANN storage needs backend diskann (the {backend} "
                             "backend stores float32 only)")
        width = getattr(index, "search_width", None)
        overrides.setdefault("width", int(width) if width is not None else None)
        return cls(backend=backend, rebuild_threshold=int(index.rebuild_threshold),
                   rebuild_fraction=float(index.rebuild_fraction),
                   ann_dtype="int8" if fp16 else "float32", **overrides)

    def index_params(self, scratch: Path) -> dict[str, Any]:
        params = dict(self.ann_params)
        if self.backend == "diskann":
            params.setdefault("dtype", self.ann_dtype)
            params.setdefault("scratch", scratch)
            # searches ask for `rerank` candidates: size the query scratch for that from the start
            params.setdefault("search_complexity", max(64, self.rerank))
        if self.num_threads is not None and self.backend != "flat":
            params.setdefault("num_threads", self.num_threads)
        return params
