"""`axw generate` fully offline with the embedded SmolLM2 backend (LLM and target), then the latent benchmark on
the generated data. Tiny counts keep it to a minute or two on CPU."""

from __future__ import annotations

import re

import pytest

from axwarehouse.catalog import Catalog
from axwarehouse.schemas import GENERATIONS
from conftest import axw, sklearn_auroc, tree_state

N_TRAIN, N_EVAL = 2, 4


@pytest.mark.slow
def test_embedded_generation_feeds_the_latent_benchmark(catalog_path, tmp_path):
    catalog_path.parent.mkdir(parents=True)
    lst = tmp_path / "three.txt"
    lst.write_text("references to rivers and lakes\nPython exceptions\nfractions and ratios\n")
    assert axw("--catalog", catalog_path, "concepts", "import", lst, "-c", "emb")[0] == 0
    # hard negatives need four sequential LLM steps: covered against the HTTP server in test_generate.py
    args = ("--catalog", catalog_path, "generate", "-c", "emb", "--n-train", N_TRAIN, "--n-eval", N_EVAL,
            "--output-length", 16, "--max-contrast", 0, "--max-attempts", 2, "--no-progress")
    code, out, err = axw(*args)
    assert code == 0, err
    with Catalog(catalog_path, read_only=True) as cat:
        cols = [d[0] for d in cat.sql("SELECT * FROM generations LIMIT 0").description]
        counts = dict(((s, c), n) for s, c, n in cat.sql(
            "SELECT split, category, count(*) FROM generations GROUP BY ALL").fetchall())
        n_fail = cat.count("generation_failures")
        models = {m for (m,) in cat.sql("SELECT DISTINCT generator_model FROM generations").fetchall()}
        ledger = cat.sql("SELECT backend, model, sum(calls), sum(cost_usd) FROM llm_costs GROUP BY ALL").fetchall()
        genres = cat.sql("SELECT count(*) FROM concepts WHERE concept_set = 'emb' AND genre IN "
                         "('text', 'code', 'math')").fetchall()[0][0]
    assert cols == GENERATIONS.names
    assert f"failures: {n_fail}" in out
    # every requested example is either a row or a recorded failure: nothing silently dropped
    wanted = {("train", "positive"): 3 * N_TRAIN, ("train", "negative"): 3 * N_TRAIN,
              ("latent_eval", "positive"): 3 * N_EVAL, ("latent_eval", "negative"): 3 * N_EVAL}
    assert set(counts) <= set(wanted)
    assert sum(counts.values()) + n_fail >= sum(wanted.values()) - 3 * N_TRAIN * (genres < 3)
    assert n_fail <= 3  # a 135M model still answers almost everything
    assert all(counts.get(k, 0) >= v - n_fail for k, v in wanted.items())
    assert models == {"embedded:smollm2"} and genres + n_fail >= 3
    calls = int(re.search(r"LLM calls (\d+)", out).group(1))  # the stage's own count of calls it made
    assert calls > 0 and ledger == [("embedded", "embedded:smollm2", calls, 0.0)]

    before = tree_state(catalog_path.parent / "warehouse")
    code, out, err = axw(*args)
    assert code == 0 and tree_state(catalog_path.parent / "warehouse") == before  # warm: nothing new

    for cmd in (["activations", "-c", "emb"], ["train", "-c", "emb", "--method", "diffmean"],
                ["latent", "-c", "emb", "--method", "diffmean"]):
        code, out, err = axw("--catalog", catalog_path, *cmd)
        assert code == 0, (cmd, err)
    with Catalog(catalog_path, read_only=True) as cat:
        auroc = cat.sql("SELECT concept_id, auroc FROM latent_auroc WHERE concept_set = 'emb' "
                        "ORDER BY concept_id").fetchall()
        ref = {k[4]: a for k, a in sklearn_auroc(cat).items() if k[2] == "emb"}
        n_gen = cat.count("generations", "concept_set = 'emb'")
        n_act = cat.sql("SELECT count(DISTINCT (split, example_id)) FROM activations "
                        "WHERE concept_set = 'emb'").fetchall()[0][0]
    assert n_act == n_gen
    assert len(auroc) == genres and dict(auroc) == pytest.approx(ref, abs=1e-9)  # scikit-learn on the same scores
