"""SAE (AxBench's ``GemmaScopeSAE``): the pretrained SAE feature a concept was labelled from (docs/axbench-recipes.md §2.4).

No training: the concept's ``sae_id`` (last segment of its Neuronpedia ref) picks feature c of the SAE in ``sae``
(a SAELens or GemmaScope directory). s_t = the SAE's activation of feature c (JumpReLU: ReLU(pre)·[pre > θ_c]);
steering direction = W_dec[c]. Our own TopK SAE (``sae = "ours"``) was not the source of any concept label, so
this method needs the SAE the concepts came from and is skipped by ``--method all`` otherwise.

Set the SAE with ``--set sae.sae=/path/to/gemmascope/layer_10/width_16k/average_l0_77``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from axwarehouse.activation_store import TokenMatrix
from axwarehouse.errors import AxwError
from axwarehouse.methods.base import Artifact, ConceptData, Context, Method
from axwarehouse.methods.registry import register
from axwarehouse.sae.layout import SAE, load_sae, resolve_sae_path


class SAEFeatureMethod(Method):
    """Shared by SAE and SAE-A: one SAE feature per concept, scored by encoding with the whole SAE (exact for
    TopK, whose feature activations depend on the other features)."""

    nonlinearity = "relu"
    scoring = "tokens"
    _cache: dict[str, SAE]

    @dataclass(frozen=True)
    class Config:
        sae: str = "ours"

    def sae_path(self, ctx: Context) -> Path:
        return resolve_sae_path(self.config.sae, ctx.warehouse, ctx.model, ctx.layer)

    def load(self, path: str | Path) -> SAE:
        cache = self.__dict__.setdefault("_cache", {})
        if str(path) not in cache:
            cache[str(path)] = load_sae(path)
        return cache[str(path)]

    def unavailable(self, ctx: Context) -> str | None:
        path = self.sae_path(ctx)
        if self.config.sae == "ours" and not (path / "cfg.json").is_file():
            return f"no SAE for this model and layer (run `axw sae train` first, or --set {self.name}.sae=DIR)"
        return None

    def _sae_for(self, ctx: Context, d: int) -> tuple[SAE, str]:
        path = self.sae_path(ctx)
        sae = self.load(path)
        if sae.d_in != d:
            raise AxwError(f"SAE {path} reads {sae.d_in}-dim vectors but the model's hidden size is {d}")
        stored = str(path.relative_to(ctx.warehouse)) if ctx.warehouse and path.is_relative_to(ctx.warehouse) \
            else str(path)
        return sae, stored

    def artifact(self, sae: SAE, feature: int, stored: str, max_act: float, **extra) -> Artifact:
        return Artifact(sae.W_dec[feature].numpy(), float(sae.b_enc[feature]), max_act,
                        extra={"feature": int(feature), "sae": stored, "architecture": sae.architecture, **extra})

    def score_tokens(self, artifact: Artifact, tokens: TokenMatrix, ctx: Context) -> torch.Tensor:
        path = Path(artifact.extra["sae"])
        sae = self.load(path if path.is_absolute() else Path(ctx.warehouse) / path)
        f = int(artifact.extra["feature"])
        return torch.cat([sae.encode(tokens.acts[s:s + 4096])[:, f] for s in range(0, len(tokens.acts), 4096)])


@register("sae")
class SAEMethod(SAEFeatureMethod):
    def unavailable(self, ctx: Context) -> str | None:
        if self.config.sae == "ours":
            return ("needs the SAE the concepts were labelled from (their Neuronpedia refs); set --set sae.sae=DIR "
                    "to a SAELens/GemmaScope directory")
        return None

    def fit(self, data: ConceptData) -> Artifact:
        sae, stored = self._sae_for(data.ctx, data.tokens.acts.shape[1])
        if data.sae_id is None or not 0 <= data.sae_id < sae.d_sae:
            raise AxwError(f"concept {data.concept_id} has no feature in SAE {stored} (sae_id {data.sae_id}, "
                           f"{sae.d_sae} features)")
        rows = np.flatnonzero((data.token_labels == 1) & ~data.tokens.is_prefix)
        z = sae.encode(data.tokens.acts[torch.from_numpy(rows)])[:, data.sae_id] if len(rows) else torch.zeros(1)
        return self.artifact(sae, data.sae_id, stored, float(z.max()))
