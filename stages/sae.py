"""`axw sae train`: fit a TopK SAE on cached activations of (model, layer) and record it in the `saes` table.

The SAE is written in the SAELens layout under ``warehouse/saes/model=…/layer=…/<name>/`` so it loads exactly like
a downloaded SAELens/GemmaScope SAE; the `saes` row (written after the files) is the record that it is complete.
Incremental: a second run with the same name and config does nothing; another config under an existing name is an
error (SAE-A artifacts point at the name).

Memory is bounded per concept: the train split is read partition by partition through the ActivationReader (the
shared negatives once, kept for every pass; each concept's partition when its turn comes), and the trainer shuffles
within a fixed token buffer (axwarehouse/sae/topk.py), so peak memory does not grow with the number of concepts.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import torch

from axwarehouse.activation_store import SHARED, ActivationReader
from axwarehouse.catalog import Catalog
from axwarehouse.errors import AxwError
from axwarehouse.heap import bounded_heap
from axwarehouse.lineage import config_hash
from axwarehouse.model.info import model_info
from axwarehouse.model.loader import DEFAULT_MODEL
from axwarehouse.sae.layout import OURS, sae_dir
from axwarehouse.sae.topk import NoTokens, TopKConfig, train_topk_sae

@dataclass(frozen=True)
class SaeTrainConfig:
    concept_set: str
    model: str = DEFAULT_MODEL
    layer: int | None = None
    name: str = OURS
    d_sae: int = 4096
    k: int = 32
    epochs: int = 3
    batch_tokens: int = 4096
    lr: float = 1e-3
    seed: int = 42
    device: str = "cpu"


@bounded_heap()  # per-concept buffers must not fragment the heap (axwarehouse/heap.py)
def run_sae_train(cat: Catalog, cfg: SaeTrainConfig) -> str:
    """Train (or find) the SAE of ``cfg``; returns a one-line summary."""
    info = model_info(cfg.model)
    layer = info.check_layer(cfg.layer)
    topk = TopKConfig(cfg.d_sae, cfg.k, cfg.epochs, cfg.batch_tokens, cfg.lr, cfg.seed)
    if not 0 < cfg.k <= cfg.d_sae:
        raise AxwError(f"--k must be between 1 and --d-sae ({cfg.d_sae})")
    params = {"model": info.name, "layer": layer, "concept_set": cfg.concept_set, "split": "train",
              **asdict(topk)}
    chash = config_hash(params)
    have = cat.sql("SELECT config_hash FROM saes WHERE model = ? AND layer = ? AND name = ?",
                   [info.name, layer, cfg.name]).fetchall()
    if have:
        if have[0][0] == chash:
            return f"sae {cfg.name} ({info.name} layer {layer}): already trained, nothing to do"
        raise AxwError(f"an SAE named {cfg.name!r} with another config exists for {info.name} layer {layer} "
                       "(choose another --name)")
    chunks, reader = split_chunks(cat, info.name, layer, cfg.concept_set)
    if not chunks:
        raise AxwError(f"no cached activations for {info.name} layer {layer}, concept set {cfg.concept_set!r}, "
                       "split train (run `axw activations` first)")
    started = time.perf_counter()
    from axwarehouse.sae.layout import save_sae_lens

    with cat.run("sae_train", {**params, "name": cfg.name}) as run:
        try:
            sae, stats = train_topk_sae(chunks, topk, cfg.device)
        except NoTokens:
            raise AxwError(f"no cached activations for {info.name} layer {layer}, concept set {cfg.concept_set!r}, "
                           "split train (run `axw activations` first)") from None
        folder = sae_dir(cat.warehouse, info.name, layer, cfg.name)
        save_sae_lens(sae, folder, {"model_name": info.name, "hook_layer": layer,
                                    "hook_name": f"blocks.{layer}.hook_resid_post", "source": "axw sae train",
                                    **stats})
        run.write("saes", pa.table({
            "model": [info.name], "layer": pa.array([layer], pa.int32()), "name": [cfg.name],
            "concept_set": [cfg.concept_set], "path": [str(folder.relative_to(cat.warehouse))],
            "architecture": ["topk"], "d_in": pa.array([sae.d_in], pa.int32()),
            "d_sae": pa.array([sae.d_sae], pa.int32()), "k": pa.array([cfg.k], pa.int32()),
            "n_tokens": pa.array([stats["n_tokens"]], pa.int64()), "fvu": [stats["fvu"]],
            "alive_features": pa.array([stats["alive_features"]], pa.int32()), "config_hash": [chash]}))
    return (f"sae {cfg.name} ({info.name} layer {layer}): TopK d_sae={cfg.d_sae} k={cfg.k} on {stats['n_tokens']:,} "
            f"tokens in {time.perf_counter() - started:.1f}s, FVU {stats['fvu']:.3f}, {stats['alive_features']} "
            "features alive")


def split_chunks(cat: Catalog, model: str, layer: int, concept_set: str) -> tuple[list, ActivationReader]:
    """Loaders of the train split's scored tokens (chat prefix dropped: never scored, so not modelled either), one
    per owning concept with activation files, in concept order, the shared negatives first (read once, then served
    from memory); and the reader, whose counters show what was read. No loaders: nothing cached."""
    owners = cat.arrow("SELECT concept_id, example_id FROM generations WHERE concept_set = ? AND split = 'train' "
                       "ORDER BY concept_id, example_id", [concept_set])
    cid = owners.column("concept_id").to_numpy()
    ex = owners.column("example_id").to_numpy()
    reader = ActivationReader(cat.warehouse, model, layer, concept_set, "train")
    kept: dict[int, torch.Tensor] = {}

    def scored(c: int) -> torch.Tensor:
        tokens = reader.read([c], ex[cid == c])  # by example id too: old-layout warehouses have no concept folders
        return tokens.acts[torch.from_numpy(np.flatnonzero(~tokens.is_prefix))]

    def loader(c: int):
        if c != SHARED:
            return lambda: scored(c)

        def shared() -> torch.Tensor:
            if c not in kept:
                kept[c] = scored(c)
            return kept[c]
        return shared

    owners_on_disk = [int(c) for c in np.unique(cid) if reader.may_hold(int(c))]  # -1 (shared) sorts first
    return [loader(c) for c in owners_on_disk], reader
