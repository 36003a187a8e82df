"""`axw demo` end to end, as the README runs it (default ./catalog.duckdb in the working folder).

* The latent half from scratch on the first 2 shipped Concept10 concepts with the embedded SmolLM2 at layer 18:
  the session's `embedded_concept10_demo` (`axw demo --no-steering --layer 18 --concepts 2`), which the parity
  tests also read.
* The steering half with the embedded model: `axw demo --concepts 2` on a copy of that warehouse (its latent half
  is then all reused), and a second run that reuses everything.
* `--concepts N` as a prefix of the full demo: on a tiny random-init model, the first run computes only the first N
  concepts and the shared negatives, a wider run computes only the concepts it adds.

The full demo (all 10 concepts) with timings is bench/demo.py; bench/parity.py compares all 10 with upstream.
"""

from __future__ import annotations

import shutil

import pytest

from axwarehouse.catalog import Catalog
from conftest import DEMO_TEST_CONCEPTS, PARITY_LAYER, demo_in, tree_state

CONCEPT_SET = "concept10"
STEERED = 2  # the steering half runs on the latent half's 2 concepts: still a mean over concepts
METHODS = {"diffmean", "pca", "lat", "probe"}


@pytest.fixture(scope="module")
def demo_dir(embedded_concept10_demo, tmp_path_factory):
    """A copy of the session's latent demo folder where `axw demo --concepts 2` then ran; returns (folder, stdout)."""
    folder = tmp_path_factory.mktemp("demo") / "demo"
    shutil.copytree(embedded_concept10_demo[0], folder)
    assert STEERED <= DEMO_TEST_CONCEPTS  # so that its latent half is all there
    return folder, demo_in(folder, "--concepts", str(STEERED), "--layer", str(PARITY_LAYER))


def _board(catalog, concept_set=CONCEPT_SET):
    with Catalog(catalog, read_only=True) as cat:
        return {m: (a, n) for m, a, n in cat.sql(
            "SELECT method, mean_auroc, n_concepts FROM latent_leaderboard WHERE concept_set = ?", [concept_set]
        ).fetchall()}


@pytest.mark.slow
def test_demo_latent_half_from_scratch_gives_four_methods_with_strong_diffmean(embedded_concept10_demo):
    folder, out = embedded_concept10_demo
    board = _board(folder / "catalog.duckdb")
    with Catalog(folder / "catalog.duckdb", read_only=True) as cat:
        layer = cat.sql("SELECT DISTINCT layer FROM latent_scores").fetchall()
        captured = cat.count("activations")
    assert "latent leaderboard" in out and "steering leaderboard" not in out  # --no-steering
    assert all(m in out for m in METHODS)
    assert set(board) == METHODS
    assert all(n == DEMO_TEST_CONCEPTS for _, n in board.values())
    assert board["diffmean"][0] >= 0.90, board
    assert layer == [(PARITY_LAYER,)]
    assert captured > 0


@pytest.mark.slow
def test_demo_steering_half_is_rated_by_the_proxy_judge(demo_dir):
    """The steering half: DiffMean over the demo's factor sweep and the prompt baseline on the same concepts and
    instructions, every output rated on all three criteria by the proxy judge, one leaderboard row per method."""
    from axwarehouse.stages.demo import DEMO_FACTORS, DEMO_INSTRUCTIONS

    folder, out = demo_dir
    with Catalog(folder / "catalog.duckdb", read_only=True) as cat:
        rows = {m: (n, tuple(c)) for m, n, c in cat.sql(
            "SELECT method, count(*), list(DISTINCT concept_id ORDER BY concept_id) FROM steering_outputs "
            "GROUP BY 1").fetchall()}
        factors = cat.sql("SELECT DISTINCT factor FROM steering_outputs WHERE method = 'diffmean' ORDER BY 1"
                          ).fetchall()
        ratings = cat.sql("SELECT judge, score_source, count(*), count(score), count(DISTINCT output_id) "
                          "FROM judge_scores GROUP BY 1, 2").fetchall()
        n_cal = cat.count("judge_calibration")
        board = {m: (j, n) for m, j, n in cat.sql(
            "SELECT method, judge, n_concepts FROM steering_leaderboard WHERE concept_set = ?", [CONCEPT_SET]
        ).fetchall()}
    assert rows["diffmean"][1] == rows["prompt"][1] == (0, 1)  # the first 2 concepts
    assert rows["diffmean"][0] == STEERED * len(DEMO_FACTORS) * DEMO_INSTRUCTIONS
    assert rows["prompt"][0] == STEERED * DEMO_INSTRUCTIONS
    assert [f for (f,) in factors] == list(DEMO_FACTORS)
    total = rows["diffmean"][0] + rows["prompt"][0]
    assert ratings == [("proxy:embedded:smollm2", "proxy", 3 * total, 3 * total, total)]
    assert n_cal == STEERED + 3  # a classifier per concept; instruction, fluency (perplexity) and fluency (repetition)
    assert board == {"diffmean": ("proxy:embedded:smollm2", STEERED), "prompt": ("proxy:embedded:smollm2", STEERED)}
    assert "steering leaderboard" in out and "win rate vs the prompt baseline" in out
    # the latent half was all there: nothing recomputed
    assert "activations" in out and "examples cached, nothing to do" in out
    assert out.count("nothing to do") >= 1 + 2 * len(METHODS)


@pytest.mark.slow
def test_a_second_demo_run_reuses_everything_and_the_report_renders(demo_dir):
    folder, _ = demo_dir
    before = tree_state(folder / "warehouse")
    out = demo_in(folder, "--concepts", str(STEERED), "--layer", str(PARITY_LAYER))
    assert "steering leaderboard" in out and "nothing to do" in out
    assert tree_state(folder / "warehouse") == before
    _check_report(folder)


def test_demo_concepts_n_is_a_prefix_of_the_full_demo(tmp_path, tiny_model_dir):
    """`--concepts 2` computes the first 2 concepts and the shared negatives only; `--concepts 3` then adds only
    concept 2 (tiny random-init model at layer 2: the property is about which work runs, not about the numbers)."""
    common = ["--model", str(tiny_model_dir), "--layer", "2", "--method", "diffmean", "--no-steering"]
    demo_in(tmp_path, "--concepts", "2", *common)
    catalog = tmp_path / "catalog.duckdb"
    with Catalog(catalog, read_only=True) as cat:
        owners = [c for (c,) in cat.sql("SELECT DISTINCT concept_id FROM activations ORDER BY 1").fetchall()]
        scored = dict(cat.sql("SELECT method, list(DISTINCT concept_id ORDER BY concept_id) FROM latent_scores "
                              "GROUP BY 1").fetchall())
        n_concept2 = cat.count("generations", "concept_set = ? AND concept_id = 2", [CONCEPT_SET])
        n_concepts = cat.count("concepts", "concept_set = ?", [CONCEPT_SET])
    assert n_concepts == 10  # the whole release is imported; the stages run on the prefix
    assert owners == [-1, 0, 1]
    assert scored == {"diffmean": [0, 1]}
    assert {m: n for m, (_, n) in _board(catalog).items()} == {"diffmean": 2}

    out = demo_in(tmp_path, "--concepts", "3", *common)
    assert f"{n_concept2} examples," in out  # the activations line: only concept 2's examples were captured
    with Catalog(catalog, read_only=True) as cat:
        owners = [c for (c,) in cat.sql("SELECT DISTINCT concept_id FROM activations ORDER BY 1").fetchall()]
        per_concept = cat.sql("SELECT method, concept_id, count(DISTINCT run_id) FROM method_artifacts "
                              "GROUP BY 1, 2 HAVING count(DISTINCT run_id) > 1").fetchall()
    assert owners == [-1, 0, 1, 2]
    assert per_concept == []  # no concept trained twice
    assert {m: n for m, (_, n) in _board(catalog).items()} == {"diffmean": 3}


def _check_report(folder):
    """`axw report` on the warehouse `axw demo` built: fast, and the leaderboard page carries the view's numbers."""
    import json
    import re
    import time

    from conftest import axw

    started = time.perf_counter()
    code, out, err = axw("--catalog", folder / "catalog.duckdb", "report", "--out", folder / "reports")
    seconds = time.perf_counter() - started
    assert code == 0, err
    assert seconds < 30, seconds  # several times bench/report.py's figure (BENCHMARKS.md): room for CI noise
    with Catalog(folder / "catalog.duckdb", read_only=True) as cat:
        board = dict(cat.sql("SELECT method, mean_auroc FROM latent_leaderboard").fetchall())
    text = (folder / "reports" / "leaderboard.html").read_text()
    spec = json.loads(re.search(r'class="vl-spec" data-target="[^"]+" data-name="latent_leaderboard">(.*?)</script>',
                                text, flags=re.S).group(1))
    rows = [r for d in spec["datasets"].values() for r in d]
    assert {r["method"]: r["mean"] for r in rows} == pytest.approx(board, abs=1e-12)
    assert len(list((folder / "reports" / "concepts" / CONCEPT_SET).glob("*.html"))) == 10
