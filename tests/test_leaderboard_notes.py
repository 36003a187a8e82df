"""The latent leaderboard says what an SAE row is built on: our own TopK SAE (`axw sae train`) vs a loaded
SAELens/GemmaScope SAE (its path), in a `note` column added at the end of the view (tiny random-init model)."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import torch
from safetensors.torch import save_file

from axwarehouse.catalog import Catalog
from conftest import axw

BOARD_COLUMNS = ["method", "model", "layer", "concept_set", "settings", "config_hash", "mean_auroc", "n_concepts",
                 "hard_negative_macro"]


def _external_saes(root, d=32, n=24):
    g = torch.Generator().manual_seed(0)
    w = {"W_enc": torch.randn(d, n, generator=g), "b_enc": torch.zeros(n), "W_dec": torch.randn(n, d, generator=g),
         "b_dec": torch.zeros(d), "threshold": torch.full((n,), 0.01)}
    lens = root / "saelens-jumprelu"
    lens.mkdir()
    save_file(w, str(lens / "sae_weights.safetensors"))
    (lens / "cfg.json").write_text(json.dumps({"architecture": "jumprelu", "d_in": d, "d_sae": n}))
    scope = root / "gemmascope" / "layer_2" / "width_24" / "average_l0_5"
    scope.mkdir(parents=True)
    np.savez(scope / "params.npz", **{k: v.numpy() for k, v in w.items()})
    return lens, scope


def test_sae_rows_are_labelled_ours_or_with_their_source(catalog_path, small_release, tiny_model_dir, tmp_path):
    catalog_path.parent.mkdir(parents=True)
    base = ["--catalog", catalog_path]
    common = ["-c", "s3", "--model", str(tiny_model_dir), "--layer", "2"]
    assert axw(*base, "import-axbench", small_release, "--concept-set", "s3")[0] == 0
    for args in (["activations", *common], ["sae", "train", *common, "--d-sae", "32", "--k", "4", "--epochs", "1"]):
        code, _, err = axw(*base, *args)
        assert code == 0, (args, err)
    lens, scope = _external_saes(tmp_path)
    configs = [["--method", "diffmean"], ["--method", "sae-a"], ["--method", "sae-a", "--set", f"sae-a.sae={lens}"],
               ["--method", "sae-a", "--set", f"sae-a.sae={scope}"]]
    for cfg in configs:
        for stage in ("train", "latent"):
            code, _, err = axw(*base, stage, *common, *cfg)
            assert code == 0, (stage, cfg, err)

    code, out, err = axw(*base, "leaderboard", "latent", "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == BOARD_COLUMNS + ["note"]  # the existing columns keep their order; note comes last
    with Catalog(catalog_path, read_only=True) as cat:
        chash = {(m, json.loads(e).get("sae")): h for m, e, h in cat.sql(
            "SELECT DISTINCT method, extra, config_hash FROM method_artifacts").fetchall()}
        ours_path = cat.sql("SELECT path FROM saes").fetchall()[0][0]
        view_cols = [r[0] for r in cat.sql("DESCRIBE latent_leaderboard").fetchall()]
    assert view_cols == BOARD_COLUMNS + ["note"]
    note = {(r["method"], r["config_hash"]): r["note"] for r in rows}
    assert len(note) == 4
    assert note[("diffmean", chash[("diffmean", None)])] == ""  # not built on an SAE: no note
    assert note[("sae-a", chash[("sae-a", ours_path)])] == "ours: TopK SAE ours-topk (axw sae train, d_sae 32, k 4)"
    assert note[("sae-a", chash[("sae-a", str(lens))])] == f"loaded jumprelu SAE: {lens}"
    assert note[("sae-a", chash[("sae-a", str(scope))])] == f"loaded jumprelu SAE: {scope}"
