"""`axw steer` / `axw judge` / the steering views on a tiny model, with the prompt baseline and the judge served by
a real chat-completions server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict

import numpy as np
import pytest

from axwarehouse.catalog import Catalog
from axwarehouse.llm.fake_server import FakeChatServer
from conftest import axw, tree_state

FACTORS = (0.0, 2.0, 8.0)
N_INPUTS = 4


def judge_responder(body: dict) -> str:
    """Deterministic judge: a rating from a hash of the prompt; some answers malformed or out of range."""
    prompt = body["messages"][-1]["content"]
    if prompt.startswith("STEERING PROMPT"):
        concept = prompt.split("Concept: ", 1)[1].split("\n", 1)[0]
        return f"Always mention {concept} in your answer."
    h = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16)
    if h % 13 == 0:
        return "I cannot decide."
    if h % 17 == 0:
        return "Rating: [[7]]"
    return f"Short explanation.\nRating: [[{h % 3}]]"


@pytest.fixture
def steered(catalog_path, small_release, tiny_model_dir):
    """s3 imported, activations/train/latent for diffmean at layer 2, then steer diffmean + prompt."""
    catalog_path.parent.mkdir(parents=True)
    base = ["--catalog", catalog_path]
    common = ["-c", "s3", "--model", tiny_model_dir, "--layer", "2"]
    assert axw(*base, "import-axbench", small_release, "-c", "s3")[0] == 0
    assert axw(*base, "activations", *common)[0] == 0
    assert axw(*base, "train", *common, "--method", "diffmean")[0] == 0
    assert axw(*base, "latent", *common, "--method", "diffmean")[0] == 0
    with FakeChatServer(responder=judge_responder) as srv:
        steer = [*base, "steer", *common, "--method", "diffmean", "--method", "prompt", "--factors",
                 ",".join(map(str, FACTORS)), "--instructions", str(N_INPUTS), "--max-new-tokens", "6",
                 "--llm", "openai-compatible:fake-llm", "--llm-base-url", srv.base_url, "--no-progress"]
        code, out, err = axw(*steer)
        assert code == 0, err
        yield catalog_path, base, common, steer, srv, out


def test_steer_writes_the_sweep_once(steered):
    catalog_path, base, common, steer, srv, out = steered
    assert "steer diffmean: 36 generations" in out and "steer prompt: 12 generations" in out
    with Catalog(catalog_path, read_only=True) as cat:
        counts = dict(cat.sql("SELECT method, count(*) FROM steering_outputs GROUP BY 1").fetchall())
        splits = cat.sql("SELECT DISTINCT concept_id, input_id, split FROM steering_outputs ORDER BY 1, 2").fetchall()
        dupes = cat.sql("SELECT count(*) - count(DISTINCT output_id) FROM steering_outputs").fetchall()[0][0]
        mags = cat.sql("""SELECT o.concept_id, any_value(o.magnitude), max(l.score), bool_and(o.strength = o.factor * o.magnitude)
                          FROM steering_outputs o JOIN latent_scores l ON l.concept_id = o.concept_id
                           AND l.method = 'diffmean' WHERE o.method = 'diffmean' GROUP BY 1""").fetchall()
        draws = cat.sql("SELECT concept_id, input_id, instruction_id FROM steering_inputs ORDER BY 1, 2").fetchall()
        prompts = cat.sql("SELECT DISTINCT concept_id, steering_prompt FROM steering_outputs "
                          "WHERE method = 'prompt'").fetchall()
        concepts = dict(cat.sql("SELECT concept_id, concept FROM concepts").fetchall())
        n_calls = cat.count("llm_calls", "purpose = 'steering_prompt'")
        lineage = cat.sql("SELECT count(*) FROM steering_outputs WHERE run_id IS NULL OR config_hash IS NULL "
                          "OR code_version IS NULL").fetchall()[0][0]
    assert counts == {"diffmean": 3 * N_INPUTS * len(FACTORS), "prompt": 3 * N_INPUTS}
    assert dupes == 0 and lineage == 0
    assert [s for _, i, s in splits] == ["selection" if i < 2 else "test" for _, i, _ in splits]
    for _cid, mag, max_latent, strength_ok in mags:  # a_c = the max latent score (positive here)
        assert max_latent > 0 and mag == pytest.approx(max_latent) and strength_ok
    for cid in range(3):  # AxBench's alpaca_eval_df.sample(n, random_state=concept_id), over the 80 steering
        # instructions of the pool (the other 20 are held out for the judges' calibration)
        want = np.random.RandomState(cid).choice(80, N_INPUTS, replace=False).tolist()
        assert [iid for c, _, iid in draws if c == cid] == want
    assert sorted(prompts) == [(c, f"Always mention {concepts[c]} in your answer.") for c in range(3)]
    assert n_calls == 3
    before, n_req = tree_state(catalog_path.parent / "warehouse"), srv.chat_requests
    code, out, _ = axw(*steer)
    assert code == 0 and "all 36 generations already present, nothing to do" in out
    assert tree_state(catalog_path.parent / "warehouse") == before and srv.chat_requests == n_req


def _by_hand(cat: Catalog, rule: str = "drop") -> tuple[dict, dict]:
    """The leaderboard and win rates from raw rows (steering_outputs, judge_scores) in plain Python. rule 'drop':
    a failed rating (NULL) leaves its output unscored (the behaviour before AxBench's rule was the default);
    'zero': it counts as 0 (AxBench's DEFAULT_RATING)."""
    outs = {r[0]: r[1:] for r in cat.sql("SELECT output_id, method, concept_id, factor, input_id, split "
                                         "FROM steering_outputs").fetchall()}
    ratings: dict[str, dict[str, float | None]] = defaultdict(dict)
    n_failed: dict[str, int] = defaultdict(int)
    for oid, crit, score in cat.sql("SELECT output_id, criterion, score FROM judge_scores").fetchall():
        ratings[oid][crit] = 0.0 if score is None and rule == "zero" else score
        n_failed[oid] += score is None
    s_of: dict[str, float | None] = {}
    for oid, r in ratings.items():
        c, i, f = r["concept"], r["instruction"], r["fluency"]
        s_of[oid] = None if None in (c, i, f) else 0.0 if 0 in (c, i, f) else 3 / (1 / c + 1 / i + 1 / f)
    cells: dict[tuple, list[float]] = defaultdict(list)
    for oid, (m, cid, f, _i, split) in outs.items():
        if s_of.get(oid) is not None:
            cells[(m, cid, split, f)].append(s_of[oid])
    means = {k: sum(v) / len(v) for k, v in cells.items()}
    best: dict[tuple, float] = {}
    for (m, cid, split, f), v in sorted(means.items(), key=lambda kv: kv[0][3]):
        if split == "selection" and ((m, cid) not in best or v > means[(m, cid, "selection", best[(m, cid)])]):
            best[(m, cid)] = f
    per_method: dict[str, list[float]] = defaultdict(list)
    for (m, cid), f in best.items():
        if (m, cid, "test", f) in means:
            per_method[m].append(means[(m, cid, "test", f)])
    board = {m: sum(v) / len(v) for m, v in per_method.items()}
    test_rows = {(m, cid, i): s_of.get(oid) for oid, (m, cid, f, i, split) in outs.items()
                 if split == "test" and best.get((m, cid)) == f}
    wins = [(test_rows[k] - test_rows[("prompt",) + k[1:]]) for k in test_rows
            if k[0] == "diffmean" and ("prompt",) + k[1:] in test_rows
            and test_rows[k] is not None and test_rows[("prompt",) + k[1:]] is not None]
    win = {"n": len(wins), "win": sum(d > 1e-6 for d in wins) / len(wins), "tie": sum(abs(d) <= 1e-6 for d in wins)
           / len(wins)} if wins else {"n": 0}
    failed_at_best = defaultdict(int)  # test ratings without a score at each concept's chosen factor
    for oid, (m, cid, f, _i, split) in outs.items():
        if split == "test" and best.get((m, cid)) == f:
            failed_at_best[m] += n_failed[oid]
    return board, {"best": best, "win": win, "failed": dict(failed_at_best)}


def test_judge_views_and_leaderboard_reproduce_from_raw_rows(steered):
    catalog_path, base, common, steer, srv, _ = steered
    judge = [*base, "judge", "--judge", "openai-compatible:fake-judge", "--judge-base-url", srv.base_url,
             "--no-progress"]
    code, out, err = axw(*judge)
    assert code == 0, err
    with Catalog(catalog_path, read_only=True) as cat:
        n = cat.count("judge_scores")
        fails = cat.sql("SELECT parse_error, count(*), bool_and(score IS NULL), bool_and(raw IS NOT NULL) "
                        "FROM judge_scores WHERE NOT parse_ok GROUP BY 1 ORDER BY 1").fetchall()
        zero_from_failure = cat.count("judge_scores", "NOT parse_ok AND score = 0")
        ppl = cat.sql("SELECT count(*), min(perplexity) > 1 FROM output_perplexity").fetchall()[0]
        views = {}
        for rule in ("zero", "drop"):  # both rules, each against its own computation by hand
            views[rule] = (
                dict(cat.sql("SELECT method, mean_score FROM steering_leaderboard WHERE judge_failures = ?",
                             [rule]).fetchall()),
                {(m, c): f for m, c, f in cat.sql("SELECT method, concept_id, best_factor FROM steering_best_factor "
                                                  "WHERE judge_failures = ?", [rule]).fetchall()},
                cat.sql("SELECT n_pairs, win_rate, tie_rate FROM winrate WHERE method = 'diffmean' "
                        "AND baseline = 'prompt' AND judge_failures = ?", [rule]).fetchall(),
                _by_hand(cat, rule))
        notes = {r[0] for r in cat.sql("SELECT DISTINCT judge FROM steering_leaderboard").fetchall()}
        best_view = views["zero"][1]
    assert n == 3 * 48
    assert sum(c for _, c, _, _ in fails) > 0 and all(null and raw for _, _, null, raw in fails)
    assert {e for e, *_ in fails} <= {"no_rating", "out_of_range"} and zero_from_failure == 0
    assert f"parse failures {sum(c for _, c, _, _ in fails)}" in out
    assert ppl == (48, True)
    assert notes == {"openai-compatible:fake-judge"}
    for rule, (board_view, best_rule, win_view, (board, extra)) in views.items():
        assert best_rule == extra["best"], rule
        assert set(board_view) == set(board) and all(math.isclose(board_view[m], board[m], abs_tol=1e-12)
                                                     for m in board), rule
        if extra["win"]["n"]:
            assert win_view[0][0] == extra["win"]["n"]
            assert win_view[0][1] == pytest.approx(extra["win"]["win"]) and win_view[0][2] == pytest.approx(extra["win"]["tie"])
    # a second judge run asks the server nothing and writes nothing
    n_req = srv.chat_requests
    code, out, _ = axw(*judge)
    assert code == 0 and "nothing to do" in out and srv.chat_requests == n_req
    code, out, _ = axw(*base, "leaderboard", "steering", "--winrate-vs", "prompt", "--format", "csv")
    assert code == 0 and out.splitlines()[0].startswith("method,model,layer,concept_set,judge,judge_note")
    # steering_best_factor never reads the test split: erasing every test rating changes no chosen factor
    with Catalog(catalog_path) as cat:
        cat.delete_where("judge_scores", "output_id IN (SELECT output_id FROM steering_outputs "
                                         "WHERE split = 'test')")
        after = {(m, c): f for m, c, f in cat.sql(
            "SELECT method, concept_id, best_factor FROM steering_best_factor WHERE judge_failures = 'zero'"
        ).fetchall()}
        assert cat.count("judge_scores") < n
    assert after == best_view


def test_killed_steer_resumes_to_the_same_outputs(steered, monkeypatch):
    from axwarehouse import catalog as catalog_mod
    from axwarehouse.stages.steer import SteerConfig, run_steer

    catalog_path, *_ = steered
    cfg = SteerConfig("s3", ("diffmean",), model=str(steered[2][3]), layer=2, factors=(4.0,), n_inputs=N_INPUTS,
                      max_new_tokens=6, batch_size=4, flush_rows=4)
    real_append = catalog_mod.Catalog.append
    calls = {"n": 0}

    def dying_append(self, table, data, run):
        if table == "steering_outputs":
            calls["n"] += 1
            if calls["n"] >= 3:  # the process dies: this and every later write fails
                raise KeyboardInterrupt
        return real_append(self, table, data, run)

    monkeypatch.setattr(catalog_mod.Catalog, "append", dying_append)
    with Catalog(catalog_path) as cat, pytest.raises(KeyboardInterrupt):
        run_steer(cat, cfg, progress=False)
    monkeypatch.setattr(catalog_mod.Catalog, "append", real_append)
    with Catalog(catalog_path) as cat:
        partial = cat.count("steering_outputs", "method = 'diffmean' AND factor = 4.0")
        resumed = run_steer(cat, cfg, progress=False)
        rows = dict(cat.sql("SELECT output_id, generation FROM steering_outputs "
                            "WHERE method = 'diffmean' AND factor = 4.0").fetchall())
        dupes = cat.sql("SELECT count(*) - count(DISTINCT output_id) FROM steering_outputs").fetchall()[0][0]
        # an uninterrupted run from scratch gives the same text for every row
        cat.delete_where("steering_outputs", "method = 'diffmean' AND factor = 4.0")
        run_steer(cat, SteerConfig(**{**cfg.__dict__, "batch_size": 24, "flush_rows": 256}), progress=False)
        fresh = dict(cat.sql("SELECT output_id, generation FROM steering_outputs "
                             "WHERE method = 'diffmean' AND factor = 4.0").fetchall())
    assert partial == 8 and resumed.generated["diffmean"] == 12 - 8 and resumed.skipped["diffmean"] == 8
    assert dupes == 0 and len(rows) == 12 and rows == fresh


def test_steer_bad_input(steered):
    catalog_path, base, common, *_ = steered
    before = tree_state(catalog_path.parent / "warehouse")
    for args, msg in [(["--method", "nosuch"], "unknown method"),
                      (["--method", "pca"], "no trained pca direction"),
                      (["--method", "diffmean", "--factors", "x"], "not a number"),
                      (["--method", "diffmean", "--instructions", "500"], "has only 80 instructions"),
                      (["--method", "diffmean", "--concepts", "99"], "not in concept set")]:
        code, out, err = axw(*base, "steer", *common, *args, "--no-progress")
        assert code == 2 and err.startswith("error: ") and msg in err, (args, err)
    assert tree_state(catalog_path.parent / "warehouse") == before


def test_replace_drops_what_the_old_artifacts_produced(steered, monkeypatch):
    """Retraining keeps the config hash, so `train --replace` must drop the steered generations (and their judge
    ratings and perplexities) made with the old directions; `steer` then regenerates exactly those rows, `axw status`
    lists their missing ratings and `axw run` has the judge rate them."""
    catalog_path, base, common, steer, srv, _ = steered
    code, out, _ = axw(*base, "status")
    assert "steering diffmean   36 outputs, 3 concepts; not judged yet" in out, out
    assert "axw judge -c s3 --judge proxy" in out.split("next")[-1]  # the offline default judge
    judge = [*base, "judge", "--judge", "openai-compatible:fake-judge", "--judge-base-url", srv.base_url,
             "--no-progress"]
    assert axw(*judge)[0] == 0
    code, out, _ = axw(*base, "status")
    assert "steering prompt     12 outputs, 3 concepts, judged by openai-compatible:fake-judge, up to date" in out, out
    with Catalog(catalog_path, read_only=True) as cat:
        before = dict(cat.sql("SELECT method, count(*) FROM steering_outputs GROUP BY 1").fetchall())
        prompt_ids = {r[0] for r in cat.sql("SELECT output_id FROM steering_outputs WHERE method = 'prompt'").fetchall()}
        n_judged = cat.count("judge_scores")
    code, out, err = axw(*base, "train", *common, "--method", "diffmean", "--replace", "--concepts", "1")
    assert code == 0, err
    with Catalog(catalog_path, read_only=True) as cat:
        after = dict(cat.sql("SELECT method, count(*) FROM steering_outputs GROUP BY 1").fetchall())
        left = {r[0] for r in cat.sql("SELECT DISTINCT concept_id FROM steering_outputs "
                                      "WHERE method = 'diffmean'").fetchall()}
        orphans = [cat.count(t, "output_id NOT IN (SELECT output_id FROM steering_outputs)")
                   for t in ("judge_scores", "output_perplexity")]
        still_prompt = {r[0] for r in cat.sql("SELECT output_id FROM steering_outputs WHERE method = 'prompt'").fetchall()}
        n_judged_after = cat.count("judge_scores")
        latent_left = {r[0] for r in cat.sql("SELECT DISTINCT concept_id FROM latent_scores").fetchall()}
    per_concept = N_INPUTS * len(FACTORS)
    assert after == {"diffmean": before["diffmean"] - per_concept, "prompt": before["prompt"]}
    assert left == {0, 2} and latent_left == {0, 2} and still_prompt == prompt_ids
    assert orphans == [0, 0] and n_judged_after == n_judged - 3 * per_concept
    # latent then steer refill only concept 1's rows
    assert axw(*base, "latent", *common, "--method", "diffmean")[0] == 0
    code, out, err = axw(*steer)
    assert code == 0, err
    assert f"steer diffmean: {per_concept} generations, {2 * per_concept} already present" in out, out
    assert "steer prompt: all 12 generations already present" in out, out
    code, out, _ = axw(*base, "status")
    assert f"MISSING {per_concept} ratings by openai-compatible:fake-judge" in out, out
    monkeypatch.setenv("AXW_LLM_BASE_URL", srv.base_url)
    code, out, err = axw(*base, "run")
    assert code == 0 and "$ axw judge -c s3 --judge openai-compatible:fake-judge --method diffmean" in out, (out, err)
    with Catalog(catalog_path, read_only=True) as cat:
        assert cat.count("judge_scores") == n_judged  # the 12 new outputs rated: 3 criteria each, as before
    assert "next: nothing to do" in axw(*base, "status")[1]


GARBAGE = ("I cannot decide.", "Rating: [[banana]]", "Rating: [[5]]")


def garbage_judge(body: dict) -> str:
    """A judge whose answer has no valid rating for a third of the prompts; every valid rating is 1 or 2, so only
    a failure can make a criterion 0."""
    h = int(hashlib.sha256(body["messages"][-1]["content"].encode()).hexdigest()[:8], 16)
    return GARBAGE[(h // 3) % 3] if h % 3 == 0 else f"Short explanation.\nRating: [[{1 + (h // 3) % 2}]]"


def _board(out: str) -> dict[str, dict]:
    import csv
    import io

    return {r["method"]: r for r in csv.DictReader(io.StringIO(out))}


def test_failed_ratings_score_zero_by_default_and_drop_keeps_the_old_numbers(steered):
    """AxBench's rule: a judge answer without a valid rating scores 0 on the leaderboard and is counted (judge
    output, status, leaderboard column and note); --judge-failures drop gives the numbers of the old rule (failed
    ratings left out). A second judge run with other settings is a separate, distinguishable leaderboard row."""
    catalog_path, base, *_ = steered
    with FakeChatServer(responder=garbage_judge) as srv:
        judge = [*base, "judge", "--judge", "openai-compatible:garbage", "--judge-base-url", srv.base_url,
                 "--no-progress", "--no-perplexity"]
        code, judged, err = axw(*judge)
        assert code == 0, err
        with Catalog(catalog_path, read_only=True) as cat:
            n_failed = cat.count("judge_scores", "score IS NULL")
            n_garbage = cat.count("judge_scores", "raw IN (?, ?, ?)", list(GARBAGE))
            n_total = cat.count("judge_scores")
            zero, drop = _by_hand(cat, "zero"), _by_hand(cat, "drop")
        assert n_total == 3 * 48 and n_failed == n_garbage and 3 * n_failed > n_total // 2
        assert f"judge failures: {n_failed} ratings without a valid rating (scored 0" in judged
        code, status, _ = axw(*base, "status")
        assert code == 0 and f"rubric axw-v1: {n_total} ratings, {n_failed} without a valid rating (scored 0" in status

        code, out, err = axw(*base, "leaderboard", "steering", "--format", "csv")
        assert code == 0, err
        board = _board(out)
        assert {m: float(r["mean_score"]) for m, r in board.items()} == pytest.approx(zero[0], abs=1e-12)
        assert {m: int(r["n_failed_ratings"]) for m, r in board.items()} == zero[1]["failed"]
        assert sum(zero[1]["failed"].values()) > 0
        assert {(r["judge_failures"], r["rubric"], r["judge_temperature"], r["judge_max_tokens"], r["judge_seed"])
                for r in board.values()} == {("zero", "axw-v1", "0.7", "256", "42")}
        assert all(r["judge_note"] == "openai-compatible:garbage (not AxBench's gpt-4o-mini) with our rubric "
                   "wording; failed ratings scored 0 (AxBench's rule)" for r in board.values())
        assert f"judge failures: {sum(zero[1]['failed'].values())} ratings without a valid rating at the chosen " \
               "factors, scored 0" in err
        code, table, _ = axw(*base, "leaderboard", "steering")
        assert code == 0 and "scored 0 (AxBench's rule" in table.splitlines()[-1]

        code, out, err = axw(*base, "leaderboard", "steering", "--format", "csv", "--judge-failures", "drop")
        assert code == 0, err
        old = _board(out)
        # (a method whose every test output at the chosen factors lost a rating has no mean under drop: NULL)
        assert {m: float(r["mean_score"]) for m, r in old.items() if r["mean_score"]} == pytest.approx(drop[0],
                                                                                                    abs=1e-12)
        assert {r["judge_failures"] for r in old.values()} == {"drop"}
        assert all(r["judge_note"].endswith("failed ratings left out (drop)") for r in old.values())
        assert drop[0] and any(abs(zero[0][m] - drop[0][m]) > 1e-6 for m in drop[0])  # the rules really differ

        # the same judge with other settings: its own rows, told apart by the settings columns
        code, _, err = axw(*judge, "--judge-max-tokens", "32", "--judge-temperature", "0.0", "--seed", "7")
        assert code == 0, err
    code, out, err = axw(*base, "leaderboard", "steering", "--format", "csv")
    assert code == 0, err
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 2 * len(board)
    settings = {(r["method"], r["judge_temperature"], r["judge_max_tokens"], r["judge_seed"]) for r in rows}
    assert settings == {(m, t, k, s) for m in board for t, k, s in (("0.7", "256", "42"), ("0.0", "32", "7"))}
