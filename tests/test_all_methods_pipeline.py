"""Every registered method through `axw sae train` → `axw train --method all` → `axw latent --method all` on a tiny
random-init model; incremental re-runs; a method added from an outside file reaches the leaderboard."""

from __future__ import annotations

import pytest

from axwarehouse.catalog import Catalog
from axwarehouse.methods import registry
from conftest import assert_leaderboard_recomputes, axw, tree_state

# small settings so CI stays fast; they are part of each method's config hash like any setting
FAST = ["--set", "reft-r1.epochs=1", "--set", "reft-r1-joint.epochs=1", "--set", "ssv.epochs=1", "--set",
        "ig.epochs=2", "--set", "ixg.epochs=2", "--set", "ig.steps=3", "--set", "prompt.max_new_tokens=4", "--set",
        "probe.epochs=2", "--set", "sft.epochs=1"]
LATENT = {"bow", "diffmean", "ig", "ixg", "lat", "pca", "probe", "prompt", "reft-r1", "reft-r1-joint", "sae-a",
          "ssv"}

TOY = '''
from axwarehouse.methods import Artifact, Method, register


@register("toy-first-dim")
class FirstDim(Method):
    """Scores a token by its first residual coordinate."""

    def fit(self, data):
        import numpy as np
        w = np.zeros(data.tokens.acts.shape[1], dtype=np.float32)
        w[0] = 1.0
        return Artifact(w)
'''


@pytest.fixture
def warehouse(tiny_warehouse):
    return tiny_warehouse


@pytest.mark.slow
def test_all_methods_train_score_and_rerun_incrementally(warehouse):
    catalog_path, common = warehouse
    base = ["--catalog", catalog_path]
    code, out, err = axw(*base, "sae", "train", *common, "--d-sae", "64", "--k", "4", "--epochs", "2")
    assert code == 0 and "FVU" in out, err
    assert "nothing to do" in axw(*base, "sae", "train", *common, "--d-sae", "64", "--k", "4", "--epochs", "2")[1]
    code, out, err = axw(*base, "sae", "train", *common, "--d-sae", "32")
    assert code == 2 and "another config" in err

    code, out, err = axw(*base, "train", *common, "--method", "all", *FAST)
    assert code == 0, err
    assert "train sae: skipped" in out  # no SAE the concepts were labelled from: `all` covers what can run
    code, out, err = axw(*base, "latent", *common, "--method", "all", *FAST)
    assert code == 0, err
    with Catalog(catalog_path, read_only=True) as cat:
        lb = {m: (n, auc) for m, n, auc in cat.sql(
            "SELECT method, n_concepts, mean_auroc FROM latent_leaderboard").fetchall()}
        n_eval = cat.count("generations", "split = 'latent_eval'")
        per_method = dict(cat.sql("SELECT method, count(*) FROM latent_scores GROUP BY 1").fetchall())
        weights = cat.sql("SELECT method, weights_path FROM method_artifacts WHERE weights_path IS NOT NULL"
                          ).fetchall()
        no_lineage = cat.count("method_artifacts", "run_id IS NULL OR config_hash IS NULL")
        sae_row = cat.sql("SELECT architecture, d_sae, k FROM saes").fetchall()
        assert_leaderboard_recomputes(cat)  # each mean AUROC = scikit-learn's on the stored scores
        # ... and the stored scores belong to their examples: DiffMean's score recomputed from the cached activations
        # (max over the example's scored tokens of h . w, rounded), independently of `axw latent`
        recomputed = cat.sql("""
            SELECT s.example_id, s.score,
                   max(list_dot_product(act_vector(a.act, a.act_bf16), m.direction)) AS again
            FROM latent_scores s
            JOIN method_artifacts m USING (method, model, layer, concept_set, concept_id)
            JOIN activations a ON a.model = s.model AND a.layer = s.layer AND a.concept_set = s.concept_set
                               AND a.split = s.split AND a.example_id = s.example_id AND NOT a.is_prefix
            WHERE s.method = 'diffmean' GROUP BY ALL""").fetchall()
    assert set(lb) == LATENT
    assert all(n == 3 for n, _ in lb.values())
    assert per_method == {m: n_eval for m in LATENT}
    assert len(recomputed) == n_eval
    # scores are stored rounded to 3 decimals, as AxBench's latent scores are
    assert all(abs(score - round(again, 3)) < 1e-6 for _, score, again in recomputed), recomputed[:3]
    assert {m for m, _ in weights} == {"bow", "ig", "ixg", "sft"}  # lora/loreft: none of their layers in 4 blocks
    assert all((catalog_path.parent / "warehouse" / p).is_file() for _, p in weights)
    assert no_lineage == 0 and sae_row == [("topk", 64, 4)]

    wh = catalog_path.parent / "warehouse"
    before = tree_state(wh)
    code, out, err = axw(*base, "train", *common, "--method", "all", *FAST)
    assert code == 0 and out.count("nothing to do") == len(LATENT) + 1, out  # + sft (steering only)
    code, out, err = axw(*base, "latent", *common, "--method", "all", *FAST)
    assert code == 0 and out.count("nothing to do") == len(LATENT), out
    assert tree_state(wh) == before

    # a method named explicitly that cannot run is an error, not a silent skip
    code, _, err = axw(*base, "train", *common, "--method", "sae")
    assert code == 2 and err.startswith("error: method sae: needs the SAE")
    code, _, err = axw(*base, "train", *common, "--method", "probe", "--set", "probe.nope=1")
    assert code == 2 and "has no setting 'nope'" in err


def test_method_from_an_outside_file_reaches_the_leaderboard(warehouse, tmp_path, monkeypatch):
    catalog_path, common = warehouse
    toy = tmp_path / "toy_method.py"
    toy.write_text(TOY)
    monkeypatch.setenv(registry.METHOD_FILES_ENV, str(toy))
    monkeypatch.setattr(registry, "_DISCOVERED", False)
    try:
        base = ["--catalog", catalog_path]
        assert axw(*base, "train", *common, "--method", "toy-first-dim")[0] == 0
        code, out, err = axw(*base, "latent", *common, "--method", "toy-first-dim")
        assert code == 0, err
        code, out, _ = axw(*base, "leaderboard", "latent", "--format", "csv")
        assert code == 0 and any(line.startswith("toy-first-dim,") for line in out.splitlines())
        with Catalog(catalog_path, read_only=True) as cat:
            scores = cat.sql("SELECT s.score, act_vector(a.act, a.act_bf16)[1] FROM latent_scores s "
                             "JOIN activations a USING (concept_set, split, example_id) "
                             "WHERE s.method = 'toy-first-dim' AND a.position = s.max_position LIMIT 5").fetchall()
        assert scores and all(abs(s - round(a, 3)) < 2e-3 for s, a in scores)
    finally:
        registry.REGISTRY.pop("toy-first-dim", None)
