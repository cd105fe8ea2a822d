"""Percentile summaries for latency-like samples."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Summary:
    """Distribution of a sample set (ms); all zeros when there are no samples (``count`` says so)."""

    count: int = 0
    mean: float = 0.0
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    max: float = 0.0

    @classmethod
    def of(cls, samples: Iterable[float] | np.ndarray) -> Summary:
        arr = np.asarray(samples if isinstance(samples, np.ndarray) else list(samples), dtype=np.float64)
        if arr.size == 0:
            return cls()
        p50, p95, p99 = np.percentile(arr, [50, 95, 99])
        return cls(int(arr.size), float(arr.mean()), float(p50), float(p95), float(p99), float(arr.max()))

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}
