"""The method protocol: what a method learns from one concept's training activations and how it scores tokens.

A method is one file in this package with a class registered under a lowercase name (see ``registry.py``)::

    @register("diffmean")
    class DiffMean(Method):
        def fit(self, data: ConceptData) -> Artifact: ...

Data plumbing (reading tables, selecting a concept's examples, max-pooling, writing rows) lives in the stages, so
a method file reads like its equation. Linear methods return a direction; scoring every concept of a method is then
``acts @ W.T (+ b)`` in one matmul, optionally through ``nonlinearity``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from axwarehouse.activation_store import TokenMatrix


@dataclass
class ConceptData:
    """One concept's binarized training set: its positives and the shared negatives of its genre."""

    concept_id: int
    concept: str
    tokens: TokenMatrix  # rows of every training example, ordered by example_id
    labels: np.ndarray  # [n_examples] 1 = positive, 0 = negative (aligned with tokens.example_ids)

    @property
    def token_labels(self) -> np.ndarray:
        return self.labels[self.tokens.token_example]

    def scored_rows(self, start: str | int = "prefix") -> np.ndarray:
        """Token rows used for training: positions after the chat prefix, or from a fixed position (Probe: 1)."""
        if start == "prefix":
            return np.flatnonzero(~self.tokens.is_prefix)
        return np.flatnonzero(self.tokens.positions >= int(start))


@dataclass
class Artifact:
    """What ``fit`` returns; becomes one `method_artifacts` row."""

    direction: np.ndarray | None  # [d] for linear methods
    bias: float = 0.0
    max_train_activation: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    weights_path: str | None = None


class Method:
    """Base class. Subclasses set ``name``, optionally a ``Config`` dataclass, and implement ``fit``."""

    name: ClassVar[str] = ""
    #: where the method is evaluated: "latent" (detection) and/or "steering"
    evaluations: ClassVar[tuple[str, ...]] = ("latent", "steering")
    #: per-token score = nonlinearity(h @ w + b); "identity" or "relu"
    nonlinearity: ClassVar[str] = "identity"

    @dataclass(frozen=True)
    class Config:
        pass

    def __init__(self, config: dict[str, Any] | None = None, seed: int = 42):
        self.config = self.Config(**(config or {}))
        self.seed = seed

    def params(self) -> dict[str, Any]:
        """Everything that defines the result (hashed into config_hash)."""
        return {"method": self.name, "seed": self.seed, **dataclasses.asdict(self.config)}

    @classmethod
    def source_hash(cls) -> str:
        """Hash of the file defining the method: artifacts from an older file are reported stale by `axw status`."""
        import hashlib
        import inspect

        return hashlib.sha256(inspect.getsource(inspect.getmodule(cls)).encode()).hexdigest()[:12]

    def fit(self, data: ConceptData) -> Artifact:  # pragma: no cover - abstract
        raise NotImplementedError

    def token_scores(self, acts: torch.Tensor, directions: torch.Tensor, biases: torch.Tensor) -> torch.Tensor:
        """Scores [n_tokens, n_concepts] of every token against every concept's direction: one matmul."""
        scores = acts @ directions.T + biases
        return torch.relu(scores) if self.nonlinearity == "relu" else scores


def unit(v: torch.Tensor) -> torch.Tensor:
    """v / ||v|| with the dtype's eps guarding zero vectors (AxBench's renormalisation)."""
    return v / v.norm().clamp_min(torch.finfo(v.dtype).eps)
