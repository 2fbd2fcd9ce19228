"""What a running job sees: progress, cancellation, a logger, the model cache, device and seeds."""

from __future__ import annotations

import logging
import os
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stablecore.errors import JobCancelled
from stablecore.modelfiles import ModelFile, models_cache, require


@dataclass
class CachedModel:
    value: Any
    size_mb: float


class ModelCache:
    """Per-worker LRU of loaded models, bounded by an estimated size budget."""

    def __init__(self, budget_mb: float) -> None:
        self.budget_mb = budget_mb
        self.entries: OrderedDict[str, CachedModel] = OrderedDict()
        self.loads = 0  # how many loaders ran: lets tests see a warm hit without timing
        self.hits = 0

    def get(self, key: str, loader: Callable[[], Any], size_mb: float | None = None) -> Any:
        if key in self.entries:
            self.entries.move_to_end(key)
            self.hits += 1
            return self.entries[key].value
        value = loader()
        self.loads += 1
        self.entries[key] = CachedModel(value, estimate_mb(value) if size_mb is None else size_mb)
        while self.used_mb > self.budget_mb and self.entries:  # never over budget, even
            self.entries.popitem(last=False)  # for one entry: the caller still gets `value`
        return value

    @property
    def used_mb(self) -> float:
        return sum(e.size_mb for e in self.entries.values())

    def describe(self) -> list[dict[str, Any]]:
        return [{"key": k, "size_mb": round(e.size_mb, 1)} for k, e in self.entries.items()]


def estimate_mb(value: Any) -> float:
    """Bytes held by arrays or torch modules, found by duck typing (the core imports no torch)."""
    if hasattr(value, "nbytes"):
        return float(value.nbytes) / 2**20
    if hasattr(value, "getbands") and hasattr(value, "size"):  # a PIL image
        return value.size[0] * value.size[1] * len(value.getbands()) / 2**20
    params = getattr(value, "parameters", None)
    if callable(params):
        try:
            return sum(p.numel() * p.element_size() for p in params()) / 2**20
        except Exception:
            return 0.0
    components = getattr(value, "components", None)  # diffusers pipelines
    if isinstance(components, dict):
        return sum(estimate_mb(c) for c in components.values() if c is not None)
    return 0.0


class Context:
    """Handed to a job function as its first argument when it asks for one."""

    def __init__(self, *, plugin: str, device: str, cache: ModelCache, tmpdir: Path,
                 report: Callable[[int, int, Any], None], is_cancelled: Callable[[], bool],
                 log: logging.Logger) -> None:
        self.plugin = plugin
        self.device = device
        self.tmpdir = tmpdir  # this job's scratch folder, emptied when it ends
        self.log = log
        self._cache = cache
        self._report = report
        self._is_cancelled = is_cancelled
        self.resolved: dict[int, dict[str, Any]] = {}  # batch index -> params decided in the job

    @property
    def cancelled(self) -> bool:
        return self._is_cancelled()

    def progress(self, step: int, total: int, preview: Any = None) -> None:
        """Report progress (an optional PIL preview); raises JobCancelled once cancelled."""
        if self._is_cancelled():
            raise JobCancelled()
        self._report(step, total, preview)

    def cache(self, key: str, loader: Callable[[], Any], size_mb: float | None = None) -> Any:
        """The value cached under `key` in this worker, loading it on first use."""
        return self._cache.get(f"{self.plugin}/{key}", loader, size_mb)

    def model_path(self, file: ModelFile) -> Path:
        """Where a declared model file is cached; an error says how to pull it if it is not."""
        return require(file, models_cache(os.environ), self.plugin)

    def seed(self, seed: int | None = -1, index: int = 0) -> int:
        """A concrete seed: `seed` itself, or a random one for -1/None.

        The used seed replaces -1 in the job's recorded params and in its PNG parameters, so
        a result can be made again. In a batch, pass the item's `index`.
        """
        used = secrets.randbelow(2**32) if seed is None or seed < 0 else int(seed)
        self.resolved.setdefault(index, {})["seed"] = used
        return used

    def rng(self, seed: int | None = -1, index: int = 0) -> np.random.Generator:
        return np.random.default_rng(self.seed(seed, index))
