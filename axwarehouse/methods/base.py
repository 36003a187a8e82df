"""The method protocol: what a method learns from one concept's training activations and how it scores tokens.

A method is one file in this package with a class registered under a lowercase name (see ``registry.py``)::

    @register("diffmean")
    class DiffMean(Method):
        def fit(self, data: ConceptData) -> Artifact: ...

Data plumbing (reading tables, selecting a concept's examples, max-pooling, writing rows) lives in the stages, so
a method file reads like its equation. Linear methods return a direction; scoring every concept of a method is then
``acts @ W.T (+ b)`` in one matmul, optionally through ``nonlinearity``.

Two class attributes widen the protocol for methods that are not a matmul over cached activations:

* ``needs``: what ``fit`` receives besides the cached training activations. ``"texts"`` fills
  ``ConceptData.inputs/outputs`` (BoW); ``"model"`` also hands over ``ConceptData.ctx`` with the loaded target
  model on ``--device`` (ReFT-r1, SSV, IG/IxG train through the frozen model).
* ``steering``: how `axw steer` uses an artifact. ``"addition"`` (default): f·a_c·direction added at layer L, the
  rows of every concept batched together. ``"model"``: the artifact changes the model itself (LoReFT, LoRA, SFT):
  :meth:`Method.steering_edit` installs one concept's edit (hooks, adapters, weight deltas) as a context manager,
  the stage generates that concept's instructions, then the edit is removed. Such methods ignore the factor.
  ``"prompt"``: no edit at all — an LLM writes a steering prompt per concept (:meth:`Method.steering_prompts`) and
  the unsteered model answers :meth:`Method.steered_input` (the prompt baseline); the factor is ignored too.
* ``concept_limit``: train (and steer) only the first N concepts of a set (SFT: AxBench's ``max_concepts: 20``).
* ``scoring``: how `axw latent` scores a concept's eval examples. ``"matmul"`` (default) is the single matmul;
  ``"tokens"`` calls :meth:`Method.score_tokens` (per-token scores, max-pooled by the stage like every other method:
  IG, IxG, SAE-A on a TopK SAE); ``"examples"`` calls :meth:`Method.score_examples` (one score per example, no
  token scores: BoW, Prompt).

One more widens how ``axw train`` calls a method:

* ``joint``: ``True`` for a method that learns all concepts of a concept set together (one dictionary, one row per
  concept: ``reft-r1-joint``). The stage then calls :meth:`Method.fit_all` once with every concept of the set and
  writes one artifact row per concept; if any concept's row of that config is missing it re-fits the whole set and
  replaces the config's rows (never a mix of two fits), otherwise it does nothing.
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from axwarehouse.activation_store import TokenMatrix


@dataclass
class Context:
    """Where a method runs: the target model (loaded on first use), layer, device and the warehouse folder.

    Only methods with ``"model"`` in ``needs`` (or scoring hooks that need it) touch ``lm``, so the cached-activation
    methods never pay for loading weights.
    """

    model: str  # model spec / canonical name
    layer: int
    device: str = "cpu"
    warehouse: Path | None = None  # where weight files (safetensors) live
    dtype: str = "float32"  # the model's compute dtype (float32 | bfloat16)
    _lm: Any = None
    _chat: Any = None

    @property
    def lm(self):
        """The loaded target model (transformers, eval mode, frozen) on ``device``."""
        if self._lm is None:
            from axwarehouse.model.loader import load

            lm = load(self.model, self.dtype)
            lm.model.to(self.device)
            self._lm = lm
        return self._lm

    @property
    def chat(self):
        from axwarehouse.model.chat import ChatFormat

        if self._chat is None:
            self._chat = ChatFormat.of(self.lm.tokenizer)
        return self._chat


@dataclass
class ConceptData:
    """One concept's binarized training set: its positives and the shared negatives of its genre."""

    concept_id: int
    concept: str
    tokens: TokenMatrix  # rows of every training example, ordered by example_id
    labels: np.ndarray  # [n_examples] 1 = positive, 0 = negative (aligned with tokens.example_ids)
    inputs: list[str] | None = None  # raw instructions, aligned with labels ("texts"/"model" methods)
    outputs: list[str] | None = None  # raw responses, aligned with labels
    ctx: Context | None = None
    sae_id: int | None = None  # the SAE feature the concept was labelled from (Neuronpedia ref), if any

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
    weights_path: str | None = None  # relative to the warehouse folder (see axwarehouse.weights)
    #: tensors to save as safetensors beside the catalog; train.py writes them and fills weights_path
    weights: dict[str, torch.Tensor] | None = None
    weights_meta: dict[str, str] | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Artifact:
        """Rebuild from a `method_artifacts` row (as a dict)."""
        direction = row.get("direction")
        return cls(None if direction is None else np.asarray(direction, dtype=np.float32),
                   float(row.get("bias") or 0.0), row.get("max_train_activation"),
                   json.loads(row.get("extra") or "{}"), row.get("weights_path"))


class Method:
    """Base class. Subclasses set ``name``, optionally a ``Config`` dataclass, and implement ``fit``."""

    name: ClassVar[str] = ""
    #: where the method is evaluated: "latent" (detection) and/or "steering"
    evaluations: ClassVar[tuple[str, ...]] = ("latent", "steering")
    #: per-token score = nonlinearity(h @ w + b); "identity" or "relu"
    nonlinearity: ClassVar[str] = "identity"
    #: extra training inputs: "activations" (always), "texts" (raw input/output), "model" (texts + ctx.lm)
    needs: ClassVar[frozenset[str]] = frozenset({"activations"})
    #: latent scoring: "matmul" (one matmul for all concepts), "tokens" (score_tokens), "examples" (score_examples)
    scoring: ClassVar[str] = "matmul"
    #: True: `axw train` fits every concept of the set at once through ``fit_all`` (a joint dictionary)
    joint: ClassVar[bool] = False
    #: steering: "addition" (f·a_c·direction at layer L), "model" (``steering_edit`` changes the model per concept;
    #: the factor is ignored) or "prompt" (``steering_prompts`` writes a prompt per concept that the unsteered model
    #: answers with each instruction, ``steered_input``; the factor is ignored)
    steering: ClassVar[str] = "addition"
    #: a steering baseline is steered when named, never by ``--method all`` (it needs no trained rows)
    steering_baseline: ClassVar[bool] = False

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

    def steering_prompts(self, client: Any, concepts: dict[int, str], seed: int) -> dict[int, str]:
        """(``steering = "prompt"``) concept_id -> the prompt that steers toward it, written with the LLM
        ``client`` (an :class:`axwarehouse.llm.LLMClient`)."""
        raise NotImplementedError(f"{self.name} does not steer by prompt")

    def steered_input(self, steering_prompt: str, instruction: str) -> str:
        """(``steering = "prompt"``) the user message the unsteered model answers."""
        raise NotImplementedError(f"{self.name} does not steer by prompt")

    def fit_all(self, datas: dict[int, ConceptData]) -> dict[int, Artifact]:
        """Artifacts of every concept in ``datas`` (concept_id -> its data), learned together; called instead of
        ``fit`` when ``joint`` is True. The default fits each concept alone."""
        return {cid: self.fit(data) for cid, data in datas.items()}

    def unavailable(self, ctx: Context) -> str | None:
        """Why this method cannot run in ``ctx`` (e.g. no SAE for the model), or None. ``--method all`` skips it."""
        return None

    def concept_limit(self) -> int | None:
        """Only the first N concepts of a set (ascending concept_id) are trained and steered; None = all.

        Read from a ``max_concepts`` Config field when the method has one (0 or less = no limit)."""
        n = getattr(self.config, "max_concepts", None)
        return int(n) if n is not None and int(n) > 0 else None

    def steering_edit(self, lm, artifact: Artifact, ctx: Context) -> AbstractContextManager:
        """(``steering = "model"``) A context manager that installs ``artifact``'s edit on ``lm.model`` on entry and
        restores the model exactly on exit. Everything it adds lives on the model's device. While it is open, the
        stage generates from the plain chat prompt of each instruction in left-padded batches."""
        raise NotImplementedError(f"{self.name} does not edit the model for steering")

    def token_scores(self, acts: torch.Tensor, directions: torch.Tensor, biases: torch.Tensor) -> torch.Tensor:
        """Scores [n_tokens, n_concepts] of every token against every concept's direction: one matmul."""
        scores = acts @ directions.T + biases
        return torch.relu(scores) if self.nonlinearity == "relu" else scores

    def score_tokens(self, artifact: Artifact, tokens: TokenMatrix, ctx: Context) -> torch.Tensor:
        """Per-token scores [n_tokens] of one concept's eval examples (``scoring = "tokens"``)."""
        raise NotImplementedError(f"{self.name} does not score tokens")

    def score_examples(self, artifact: Artifact, concept: str, inputs: list[str], outputs: list[str],
                       ctx: Context) -> np.ndarray:
        """One score per eval example [n_examples] (``scoring = "examples"``)."""
        raise NotImplementedError(f"{self.name} does not score examples")


def unit(v: torch.Tensor) -> torch.Tensor:
    """v / ||v|| with the dtype's eps guarding zero vectors (AxBench's renormalisation)."""
    return v / v.norm().clamp_min(torch.finfo(v.dtype).eps)
