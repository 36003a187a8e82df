"""The latent benchmark end to end on a tiny random-init model: activations → train → latent → views."""

from __future__ import annotations

import duckdb
import pytest

from axwarehouse.catalog import Catalog
from conftest import assert_leaderboard_recomputes, axw, tree_state

METHODS = ("diffmean", "pca", "lat", "probe")


@pytest.fixture
def warehouse(tiny_warehouse, tiny_model_dir):
    """A catalog with the small release imported and activations of the tiny model at layer 2."""
    return tiny_warehouse[0], str(tiny_model_dir)


def _expected_tokens(catalog_path, model_dir) -> int:
    from axwarehouse.model.chat import ChatFormat
    from axwarehouse.model.loader import load

    lm = load(model_dir)
    chat = ChatFormat.of(lm.tokenizer)
    with Catalog(catalog_path, read_only=True) as cat:
        rows = cat.sql("SELECT split, input, output FROM generations WHERE concept_set = 's3'").fetchall()
    return sum(len(chat.ids_for(s, i, o)) for s, i, o in rows)


def test_activations_one_row_per_token_and_incremental(warehouse):
    catalog_path, model = warehouse
    with Catalog(catalog_path, read_only=True) as cat:
        n_tok = cat.count("activations")
        dupes = cat.sql("SELECT count(*) FROM (SELECT split, example_id, position FROM activations "
                        "GROUP BY ALL HAVING count(*) > 1)").fetchall()[0][0]
        n_ex = cat.sql("SELECT count(DISTINCT (split, example_id)) FROM activations").fetchall()[0][0]
        n_gen = cat.count("generations")
        dims = cat.sql("SELECT DISTINCT len(act_vector(act, act_bf16)) FROM activations").fetchall()
        prefix = cat.sql("SELECT DISTINCT position FROM activations WHERE is_prefix ORDER BY 1").fetchall()
    assert n_tok == _expected_tokens(catalog_path, model)
    assert dupes == 0 and n_ex == n_gen
    assert dims == [(32,)]
    assert [p for (p,) in prefix] == list(range(24))  # SmolLM2's template: 24-token system prefix
    before = tree_state(catalog_path.parent / "warehouse")
    code, out, _ = axw("--catalog", catalog_path, "activations", "-c", "s3", "--model", model, "--layer", "2")
    assert code == 0 and "nothing to do" in out
    assert tree_state(catalog_path.parent / "warehouse") == before


def test_captured_vectors_equal_a_plain_forward(warehouse):
    """Stored vectors are the layer-2 block output of an unbatched float32 forward pass, up to bfloat16 rounding
    (the default capture computes and stores bfloat16 on this CPU; tests/test_activation_store.py pins the bits)."""
    import numpy as np
    import torch

    from axwarehouse.model.chat import ChatFormat
    from axwarehouse.model.loader import load

    catalog_path, model = warehouse
    lm = load(model)
    chat = ChatFormat.of(lm.tokenizer)
    with Catalog(catalog_path, read_only=True) as cat:
        split, ex, inp, outp = cat.sql("SELECT split, example_id, input, output FROM generations "
                                       "WHERE split = 'latent_eval' ORDER BY example_id LIMIT 1").fetchall()[0]
        acts = cat.sql("SELECT act_vector(act, act_bf16) FROM activations WHERE split = ? AND example_id = ? "
                       "ORDER BY position",
                       [split, ex]).fetchall()
    ids = torch.tensor([chat.ids_for(split, inp, outp)])
    with torch.inference_mode():
        ref = lm.model(input_ids=ids, output_hidden_states=True).hidden_states[3][0].numpy()
    got = np.array([a for (a,) in acts], dtype=np.float32)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=2e-2, atol=2e-2 * np.abs(ref).max())


def test_activations_beyond_float16_range_are_stored_exactly(tmp_path, tiny_model_dir, small_release):
    """Gemma-family residual streams exceed float16's 65504 (Gemma-3-270M reaches ~3e4 mid-depth and more at BOS):
    a model whose layer-2 output is ~1e6 must be cached finite and exact, and train on it."""
    import numpy as np
    import torch
    import transformers

    from axwarehouse.model.chat import ChatFormat

    big = tmp_path / "big-model"
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(1e6)  # the residual stream carries the embedding scale
    model.save_pretrained(big)
    transformers.AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(big)
    catalog_path = tmp_path / "wh" / "catalog.duckdb"
    catalog_path.parent.mkdir()
    base = ["--catalog", catalog_path]
    assert axw(*base, "import-axbench", small_release, "-c", "s3")[0] == 0
    code, _, err = axw(*base, "activations", "-c", "s3", "--model", str(big), "--layer", "2", "--dtype", "float32",
                       "--store-dtype", "float32")
    assert code == 0, err
    with Catalog(catalog_path, read_only=True) as cat:
        split, inp, outp, ex = cat.sql("SELECT split, input, output, example_id FROM generations "
                                       "WHERE split = 'train' ORDER BY example_id LIMIT 1").fetchall()[0]
        acts = cat.sql("SELECT act_vector(act, act_bf16) FROM activations WHERE split = ? AND example_id = ? "
                       "ORDER BY position",
                       [split, ex]).fetchall()
    got = np.array([a for (a,) in acts], dtype=np.float32)
    tok = transformers.AutoTokenizer.from_pretrained(big)
    ids = torch.tensor([ChatFormat.of(tok).ids_for(split, inp, outp)])
    with torch.inference_mode():
        ref = model(input_ids=ids, output_hidden_states=True).hidden_states[3][0].numpy()
    assert np.abs(ref).max() > 65504 and np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    code, out, err = axw(*base, "train", "-c", "s3", "--model", str(big), "--layer", "2", "--method", "diffmean",
                         "--method", "pca")
    assert code == 0 and "diffmean: 3 concepts trained" in out, (out, err)


def test_train_latent_and_leaderboard(warehouse):
    catalog_path, model = warehouse
    base = ["--catalog", catalog_path]
    code, out, err = axw(*base, "train", "-c", "s3", "--model", model, "--layer", "2", *sum([["--method", m]
                                                                                           for m in METHODS], []))
    assert code == 0, err
    code, out, err = axw(*base, "latent", "-c", "s3", "--model", model, "--layer", "2", "--method", "all")
    assert code == 0, err
    with Catalog(catalog_path, read_only=True) as cat:
        arts = cat.sql("SELECT method, count(*), min(abs(list_inner_product(direction, direction) - 1)) < 1e-4 "
                       "FROM method_artifacts GROUP BY 1 ORDER BY 1").fetchall()
        lb = cat.sql("SELECT method, n_concepts, mean_auroc FROM latent_leaderboard ORDER BY method").fetchall()
        dupes = cat.sql("SELECT count(*) FROM (SELECT method, config_hash, concept_id, example_id FROM latent_scores "
                        "GROUP BY ALL HAVING count(*) > 1)").fetchall()[0][0]
        # every eval example of a concept is scored by that concept's direction
        per = cat.sql("""SELECT count(*) FROM latent_scores s JOIN generations g USING (concept_set, split, example_id)
                         WHERE g.concept_id <> s.concept_id""").fetchall()[0][0]
        n_eval = cat.count("generations", "split = 'latent_eval'")
        lineage = cat.sql("SELECT count(*) FROM latent_scores WHERE run_id IS NULL OR config_hash IS NULL "
                          "OR code_version IS NULL").fetchall()[0][0]
        assert_leaderboard_recomputes(cat)  # each mean AUROC = scikit-learn's on the stored scores
    assert [(m, n) for m, n, _ in arts] == [(m, 3) for m in sorted(METHODS)] and all(ok for *_, ok in arts)
    assert [(m, n) for m, n, _ in lb] == [(m, 3) for m in sorted(METHODS)]
    assert dupes == 0 and per == 0 and lineage == 0
    with Catalog(catalog_path, read_only=True) as cat:
        assert cat.count("latent_scores") == 4 * n_eval
    code, out, _ = axw(*base, "leaderboard", "latent", "--format", "csv")
    assert code == 0 and out.splitlines()[0].startswith("method,model,layer,concept_set")
    assert len(out.strip().splitlines()) == 5


def test_new_method_computes_only_its_rows(warehouse):
    """Adding a method to a warehouse that has others writes only that method's rows, no activations."""
    catalog_path, model = warehouse
    base = ["--catalog", catalog_path]
    common = ["-c", "s3", "--model", model, "--layer", "2"]
    assert axw(*base, "train", *common, "--method", "diffmean")[0] == 0
    assert axw(*base, "latent", *common, "--method", "diffmean")[0] == 0
    wh = catalog_path.parent / "warehouse"
    acts_before = tree_state(wh / "activations")
    others_before = {t: tree_state(wh / t / "method=diffmean") for t in ("method_artifacts", "latent_scores")}
    code, out, _ = axw(*base, "train", *common, "--method", "diffmean", "--method", "probe")
    assert code == 0 and "train diffmean: all 3 concepts already present" in out
    assert axw(*base, "latent", *common, "--method", "diffmean", "--method", "probe")[0] == 0
    assert tree_state(wh / "activations") == acts_before
    assert {t: tree_state(wh / t / "method=diffmean") for t in others_before} == others_before
    with Catalog(catalog_path, read_only=True) as cat:
        runs = cat.sql("SELECT stage, rows_written FROM runs WHERE stage IN ('train', 'latent') "
                       "ORDER BY started_at").fetchall()
        probe = cat.count("method_artifacts", "method = 'probe'")
    assert probe == 3
    n_eval_rows = runs[1][1]
    assert runs[2:] == [("train", 3), ("latent", n_eval_rows)]


def test_killed_activation_run_resumes_without_duplicates(catalog_path, small_release, tiny_model_dir, monkeypatch):
    from axwarehouse import catalog as catalog_mod

    catalog_path.parent.mkdir(parents=True)
    assert axw("--catalog", catalog_path, "import-axbench", small_release, "-c", "s3")[0] == 0
    real_append = catalog_mod.Catalog.append
    calls = {"n": 0}

    def dying_append(self, table, data, run):
        if table == "activations" and calls["n"] == 1:
            raise KeyboardInterrupt  # the second file never lands, as if the process was killed mid-write
        calls["n"] += table == "activations"
        return real_append(self, table, data, run)

    monkeypatch.setattr(catalog_mod.Catalog, "append", dying_append)
    from axwarehouse.stages.activations import ActivationsConfig, run_activations

    cfg = ActivationsConfig("s3", str(tiny_model_dir), 2, file_tokens=2000)
    with Catalog(catalog_path) as cat, pytest.raises(KeyboardInterrupt):
        run_activations(cat, cfg)
    with Catalog(catalog_path, read_only=True) as cat:
        partial = cat.count("activations")
        status = cat.sql("SELECT status FROM runs WHERE stage = 'activations'").fetchall()
    assert partial > 0 and status == [("interrupted",)]
    monkeypatch.setattr(catalog_mod.Catalog, "append", real_append)
    with Catalog(catalog_path) as cat:
        resumed = run_activations(cat, cfg)
    assert resumed.already > 0 and resumed.examples > 0
    with Catalog(catalog_path, read_only=True) as cat:
        total = cat.count("activations")
        dupes = cat.sql("SELECT count(*) FROM (SELECT split, example_id, position FROM activations "
                        "GROUP BY ALL HAVING count(*) > 1)").fetchall()[0][0]
    assert total == _expected_tokens(catalog_path, str(tiny_model_dir)) and dupes == 0
    assert not list((catalog_path.parent / "warehouse").rglob("*.tmp"))


def test_catalog_opens_in_plain_duckdb(warehouse):
    catalog_path, _ = warehouse
    con = duckdb.connect(str(catalog_path), read_only=True)
    try:
        # its views hold paths relative to the catalog's folder (relocatable): resolve them against that folder
        con.execute(f"SET file_search_path = '{catalog_path.parent}'")
        views = {r[0] for r in con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        n = con.sql("SELECT count(*) FROM activations").fetchall()[0][0]
    finally:
        con.close()
    assert {"concepts", "generations", "activations", "method_artifacts", "latent_scores", "latent_auroc",
            "latent_leaderboard"} <= views
    assert n > 0


def test_status_reports_missing_and_replace_retrains(warehouse):
    catalog_path, model = warehouse
    base = ["--catalog", catalog_path]
    common = ["-c", "s3", "--model", model, "--layer", "2"]
    assert axw(*base, "train", *common, "--method", "diffmean")[0] == 0
    code, out, _ = axw(*base, "status")
    assert code == 0
    assert "activations" in out and "complete" in out
    assert "diffmean" in out and "MISSING latent scores for 3 concepts" in out
    assert axw(*base, "latent", *common, "--method", "diffmean")[0] == 0
    code, out, _ = axw(*base, "status")
    assert "3 trained, 3 scored, up to date" in out
    with Catalog(catalog_path, read_only=True) as cat:
        first = set(cat.sql("SELECT run_id FROM method_artifacts").fetchall())
    code, out, _ = axw(*base, "train", *common, "--method", "diffmean", "--replace")
    assert code == 0 and "3 concepts trained" in out
    with Catalog(catalog_path, read_only=True) as cat:
        arts = cat.sql("SELECT run_id, count(*) FROM method_artifacts GROUP BY 1").fetchall()
        scores = cat.count("latent_scores")
    assert len(arts) == 1 and arts[0][1] == 3 and (arts[0][0],) not in first
    assert scores == 0  # scores of replaced artifacts are dropped with them


def test_delete_where_keeps_partition_column_values(tmp_path):
    """Rewriting a file of a partitioned table must keep the rows' own values: the partition folder's name
    (``judge=openai-compatible_fake-judge-<hash>``) is not the column value and must not replace it."""
    import pyarrow as pa

    with Catalog(tmp_path / "catalog.duckdb") as cat:
        with cat.run("test", {}) as run:
            run.write("judge_scores", pa.table({
                "output_id": ["a", "b", "c"], "judge": ["openai-compatible:fake-judge"] * 3,
                "criterion": ["concept"] * 3, "score": pa.array([0.0, 1.0, 2.0]),
                "score_source": ["parsed"] * 3, "expected_score": pa.array([None] * 3, pa.float64()),
                "parse_ok": [True] * 3, "parse_error": [""] * 3, "raw": ["x"] * 3, "request_hash": ["h"] * 3,
                "rubric": ["axw-v1"] * 3, "config_hash": ["c"] * 3}))
        (folder,) = {p.parent.name for p in cat.table_files("judge_scores")}
        assert folder.startswith("judge=") and folder != "judge=openai-compatible:fake-judge"
        assert cat.delete_where("judge_scores", "output_id = ?", ["b"]) == 1
        rows = cat.sql("SELECT output_id, judge FROM judge_scores ORDER BY 1").fetchall()
    assert rows == [("a", "openai-compatible:fake-judge"), ("c", "openai-compatible:fake-judge")]
