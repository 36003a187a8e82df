"""`axw judge validate` and the `judge_validity` views: the view maths on hand-made rows (checked against
scikit-learn), the OpenAI judge end to end against a real local chat-completions server (a judge that always
answers 2, one that answers the label), the steering leaderboard's validity line, bad input (nothing written),
and the proxy judge's independence of the other items it rates."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from axwarehouse.catalog import Catalog
from axwarehouse.errors import AxwError
from axwarehouse.llm.fake_server import FakeChatServer
from axwarehouse.steering.instructions import judge_calibration_set, load_instructions
from axwarehouse.judging.rubric import ours
from conftest import axw
from steered_rows import steered_outputs

SET = "s3"


def _rows(judge: str, labelled: list[tuple[int, str, int]], rate) -> list[dict]:
    """judge_validation rows of concept-criterion items (concept_id, kind, label) rated by ``rate(label, kind)``."""
    return [{"judge": judge, "judge_config_hash": "h", "rubric": "r", "concept_set": "s", "concept_id": c,
             "criterion": "concept", "item_id": f"{c}/{k}/{i}", "split": "latent_eval", "example_id": i, "kind": kind,
             "label": label, "rating": rate(label, kind), "score_source": "test", "instruction": "", "text": "",
             "raw": "", "config_hash": "h"} for i, (c, kind, label) in enumerate(labelled) for k in [kind]]


def _write(catalog_path, rows: list[dict]) -> None:
    catalog_path.parent.mkdir(parents=True, exist_ok=True)
    with Catalog(catalog_path) as cat, cat.run("test", {}) as run:
        run.write("judge_validation", pa.Table.from_pylist(rows))


LABELLED = [(c, kind, label) for c in (0, 1) for kind, label, n in
            (("positive", 1, 5), ("negative", 0, 6), ("hard_negative", 0, 3)) for _ in range(n)]


def test_validity_view_always_2_oracle_and_a_mixed_judge_against_sklearn(catalog_path):
    rng = random.Random(0)
    mixed = {i: rng.choice([None, 0.0, 1.0, 2.0]) for i in range(len(LABELLED))}
    rows = (_rows("always2", LABELLED, lambda label, kind: 2.0)
            + _rows("oracle", LABELLED, lambda label, kind: 2.0 * label if kind != "hard_negative" else 2.0))
    mixed_rows = _rows("mixed", LABELLED, lambda label, kind: None)
    for i, r in enumerate(mixed_rows):
        r["rating"] = mixed[i]
    _write(catalog_path, rows + mixed_rows)
    with Catalog(catalog_path, read_only=True) as cat:
        per = {(r[0], r[1]): r[2:] for r in cat.sql(
            "SELECT judge, concept_id, n, n_hard_negative, false_positive_rate, true_positive_rate, accuracy, kappa, "
            "auroc, hard_negative_fpr, n_failed FROM judge_validity").fetchall()}
        macro = {r[0]: r[1:] for r in cat.sql(
            "SELECT judge, n_concepts, false_positive_rate, true_positive_rate, accuracy, kappa, auroc "
            "FROM judge_validity_macro").fetchall()}
    for c in (0, 1):
        n, n_hard, fpr, tpr, acc, kappa, auroc, hard_fpr, failed = per[("always2", c)]
        assert (n, n_hard, fpr, tpr, kappa, auroc, hard_fpr, failed) == (11, 3, 1.0, 1.0, 0.0, 0.5, 1.0, 0)
        assert acc == pytest.approx(5 / 11)
        # the oracle rates hard negatives 2: that shows in hard_negative_fpr only, never in its figures
        assert per[("oracle", c)][2:8] == (0.0, 1.0, 1.0, 1.0, 1.0, 1.0)
        ordinary = [(i, label) for i, (cc, kind, label) in enumerate(LABELLED) if cc == c and kind != "hard_negative"]
        y = [label for _, label in ordinary]
        rating = [mixed[i] or 0.0 for i, _ in ordinary]  # a NULL rating counts 0
        said = [int(r >= 1) for r in rating]
        got = per[("mixed", c)]
        assert got[4] == pytest.approx(sum(s == t for s, t in zip(said, y)) / len(y))
        assert got[5] == pytest.approx(cohen_kappa_score(y, said))
        assert got[6] == pytest.approx(roc_auc_score(y, rating))
        assert got[8] == sum(mixed[i] is None for i, (cc, *_r) in enumerate(LABELLED) if cc == c)
    assert macro["always2"][:5] == (2, 1.0, 1.0, pytest.approx(5 / 11), 0.0)
    assert macro["oracle"][:6] == (2, 0.0, 1.0, 1.0, 1.0, 1.0)
    assert macro["mixed"][4] == pytest.approx((per[("mixed", 0)][5] + per[("mixed", 1)][5]) / 2)


@pytest.fixture
def s3(catalog_path, small_release):
    catalog_path.parent.mkdir(parents=True)
    assert axw("--catalog", catalog_path, "import-axbench", small_release, "--concept-set", SET)[0] == 0
    return catalog_path


def _oracle(catalog_path):
    """A responder that answers each rubric prompt with 2 × the item's label (it knows the labelled set)."""
    from axwarehouse.stages.judge_validate import labelled_items

    with Catalog(catalog_path, read_only=True) as cat:
        items = labelled_items(cat, SET)
    rubric = ours()
    answer = {rubric.prompt(x.criterion, x.item.concept, x.item.instruction, x.item.output): 2 * x.label
              for x in items}
    return lambda body: f"Because.\nRating: [[{answer[body['messages'][-1]['content']]}]]", len(items)


def _judged(cat) -> list[tuple]:
    return cat.sql("SELECT criterion, n_concepts, false_positive_rate, true_positive_rate, accuracy, kappa, auroc "
                   "FROM judge_validity_macro ORDER BY criterion").fetchall()


def test_openai_judge_validates_against_a_local_server(s3, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-secret")
    responder, n_items = _oracle(s3)
    with FakeChatServer(responder=responder) as srv:
        base = ["--catalog", s3, "judge", "validate", "-c", SET, "--judge", "openai:gpt-4o-mini",
                "--judge-base-url", srv.base_url, "--no-progress"]
        code, out, err = axw(*base, "--dry-run")
        assert code == 0, err
        assert f"{n_items} LLM calls to openai:gpt-4o-mini" in out and "estimated cost ≤ $" in out
        assert srv.chat_requests == 0
        code, out, err = axw(*base)
        assert code == 0, err
        assert srv.chat_requests == n_items
        code, again, err = axw(*base)
        assert code == 0 and "nothing to do" in again and srv.chat_requests == n_items
    with Catalog(s3, read_only=True) as cat:
        rows = _judged(cat)
        kinds = dict(cat.sql("SELECT kind, count(*) FROM judge_validation GROUP BY kind").fetchall())
        hard = cat.sql("SELECT min(n_hard_negative), min(hard_negative_fpr) FROM judge_validity "
                       "WHERE criterion = 'concept'").fetchall()[0]
    assert [r[0] for r in rows] == ["concept", "fluency", "instruction"]
    assert {r[2:] for r in rows} == {(0.0, 1.0, 1.0, 1.0, 1.0)} and {r[1] for r in rows} == {3}
    assert set(kinds) == {"positive", "negative", "hard_negative", "own", "other", "as_written", "shuffled", "looped"}
    assert kinds["shuffled"] == kinds["looped"] == kinds["as_written"] == kinds["own"] == kinds["other"]
    assert hard[0] > 0 and hard[1] == 0.0
    code, table, err = axw("--catalog", s3, "leaderboard", "judges", "--format", "csv")
    assert code == 0, err
    assert table.splitlines()[0].startswith("judge,concept_set,criterion,n_concepts,n,false_positive_rate")
    assert len(table.splitlines()) == 4 and all(",openai:gpt-4o-mini," not in ln for ln in table.splitlines())


def _steering_outputs(catalog_path, n: int = 4) -> None:
    outs = steered_outputs(SET, n)
    with Catalog(catalog_path) as cat, cat.run("test-steering", {}) as run:
        run.write("steering_outputs", pa.Table.from_pylist(outs))


def test_always_2_judge_end_to_end_and_the_steering_leaderboard_shows_its_validity(s3):
    _steering_outputs(s3)
    with FakeChatServer(responder=lambda body: "Sure.\nRating: [[2]]") as srv:
        judge = ["--judge", "openai-compatible:fj", "--judge-base-url", srv.base_url, "--no-progress"]
        assert axw("--catalog", s3, "judge", *judge, "--no-perplexity")[0] == 0
        code, before, err = axw("--catalog", s3, "leaderboard", "steering")
        assert code == 0, err
        code, out, err = axw("--catalog", s3, "judge", "validate", "-c", SET, *judge)
        assert code == 0, err
    code, after, err = axw("--catalog", s3, "leaderboard", "steering")
    assert code == 0, err
    assert f"judge validity openai-compatible:fj on {SET}: not validated (`axw judge validate -c {SET} " in before
    line = next(ln for ln in after.splitlines() if ln.startswith("judge validity"))
    assert line.startswith(f"judge validity openai-compatible:fj on {SET} (macro over concepts): concept FPR 1.00 "
                           "(max 1.00) TPR 1.00 kappa 0.00 AUROC 0.50 hard-negative FPR 1.00; fluency FPR 1.00")
    with Catalog(s3, read_only=True) as cat:
        assert {r[2] for r in _judged(cat)} == {1.0}


def test_bad_input_one_line_exit_2_and_no_rows(s3, monkeypatch):
    with Catalog(s3) as cat, cat.run("test", {}) as run:  # a set with concepts but no texts at all
        run.write("concepts", pa.Table.from_pylist([{
            "concept_set": "bare", "concept_id": 0, "concept": "x", "genre": "text", "genres": ["text"], "ref": None,
            "sae_id": None, "source": "test", "source_hash": "h"}]))
    with FakeChatServer(responder=lambda body: "Rating: [[1]]") as srv:
        # the backend refuses part-way: some items' prompts get 401 (an outright rejection, raised mid-run)
        srv.fault_for["JUDGE FLUENCY"] = "401"
        cases = [(["-c", SET, "--judge", "nope:x"], "unknown LLM backend 'nope'"),
                 (["-c", "bare", "--judge", "openai-compatible:fj", "--judge-base-url", srv.base_url],
                  "concept set 'bare' has no held-out data"),
                 (["-c", "missing", "--judge", "openai-compatible:fj", "--judge-base-url", srv.base_url],
                  "unknown concept set 'missing'"),
                 (["-c", SET, "--judge", "openai-compatible:fj", "--judge-base-url", srv.base_url,
                   "--judge-concurrency", "1"], "rejected the credentials (HTTP 401)")]
        for args, msg in cases:
            code, out, err = axw("--catalog", s3, "judge", "validate", *args, "--no-progress")
            # stderr also holds the in-process test server's report of the connection the client closed
            ours = [ln for ln in err.splitlines() if ln.startswith("error:")]
            assert code == 2 and ours == err.strip().splitlines()[-1:] and msg in ours[0], (args, err)
        answered = srv.chat_requests
    assert answered > 0  # the failing run got answers before the rejection: they are cached, no row is visible
    with Catalog(s3, read_only=True) as cat:
        assert cat.count("judge_validation") == 0
        assert cat.count("llm_calls") > 0


def test_steer_never_draws_the_judge_calibration_instructions(tmp_path):
    steer, held = load_instructions(), judge_calibration_set()
    assert len(steer.instructions) == 80 and len(held.instructions) == 20
    assert not set(steer.instructions) & set(held.instructions)
    assert {iid for c in range(50) for _, iid, _ in steer.draw(c, 80)} == set(range(80))
    user = tmp_path / "mine.txt"
    user.write_text("Tell me a joke.\n" + held.instructions[3] + "\n")
    with pytest.raises(AxwError, match="held-out calibration instructions"):
        load_instructions(user)


def test_proxy_rating_of_an_output_does_not_depend_on_what_is_rated_with_it(s3, tiny_model_dir, tmp_path):
    """Rate outputs A alone, then A among B (each in its own fresh copy of the warehouse, so every calibration
    is computed anew): A's ratings, and the calibrations they name, are identical."""
    import json
    import shutil

    from axwarehouse.judging.llm_judge import CRITERIA
    from axwarehouse.judging.config import JudgeConfig
    from axwarehouse.judging.proxy import ProxyJudge, proxy_hash
    from axwarehouse.judging.rater import Item

    with Catalog(s3, read_only=True) as cat:
        rows = cat.sql("SELECT concept_id, input, output FROM generations WHERE concept_set = ? AND "
                       "split = 'latent_eval' AND category = 'positive' ORDER BY concept_id, example_id",
                       [SET]).fetchall()
    items = [Item(f"x{k}", SET, c, "c", instr, text, 8) for k, (c, instr, text) in enumerate(rows)]
    a, b = items[:3], items[3:9]
    copy = tmp_path / "copy"
    shutil.copytree(s3.parent, copy)
    cfg = JudgeConfig(judge="proxy", dtype="float32")

    def rate(catalog, batch):
        with Catalog(catalog) as cat, cat.run("test", {}) as run:
            judge = ProxyJudge(cat, run, cfg, str(tiny_model_dir), proxy_hash(cfg.seed))
            got = judge.rate(batch, CRITERIA)
        return {(r.item_id, r.criterion): (r.score, json.loads(r.raw)["calibration_id"]) for r in got}

    alone = rate(s3, a)
    together = rate(copy / "catalog.duckdb", b[:3] + a + b[3:])
    assert len(alone) == 3 * len(a)
    assert {k: together[k] for k in alone} == alone


def test_embedded_judge_validates_through_the_same_rating_path(s3, tiny_model_dir):
    """An embedded LLM judge (the tiny random model): every fluency item rated once, each with a score (parsed or
    read from the constrained rating slot), the run's calls cached."""
    code, out, err = axw("--catalog", s3, "judge", "validate", "-c", SET, "--judge", f"embedded:{tiny_model_dir}",
                         "--criterion", "fluency", "--judge-max-tokens", "4", "--no-progress", "--dtype", "float32")
    assert code == 0, err
    with Catalog(s3, read_only=True) as cat:
        n_pos = cat.count("generations", "split = 'latent_eval' AND category = 'positive'")
        rows = cat.sql("SELECT judge, rating, score_source FROM judge_validation").fetchall()
        calls = cat.count("llm_calls")
    assert len(rows) == 3 * n_pos and calls == len(rows)
    assert {r[0] for r in rows} == {f"embedded:{tiny_model_dir}"}
    assert {r[2] for r in rows} <= {"parsed", "constrained"} and all(r[1] in (0.0, 1.0, 2.0) for r in rows)


def test_a_set_without_latent_eval_holds_out_a_train_slice_the_proxy_never_trains_on(s3):
    from axwarehouse.judging.heldout import heldout_rows
    from axwarehouse.judging.proxy_calibration import concept_training_texts
    from axwarehouse.stages.judge_validate import labelled_items

    with Catalog(s3) as cat:
        cat.delete_where("generations", "split = 'latent_eval'")
        held = heldout_rows(cat, SET)
        n_train = cat.count("generations", "split = 'train'")
        trained = {t for c in (0, 1, 2) for texts in concept_training_texts(cat, SET, c, 42) for t in texts}
        items = labelled_items(cat, SET)
    assert {r[0] for r in held} == {"train"} and 0 < len(held) < n_train / 2
    assert any(r[3] == "positive" for r in held) and any(r[2] == -1 for r in held)
    assert not {r[5] for r in held} & trained
    assert {x.split for x in items} == {"train"} and {x.criterion for x in items} == {"concept", "instruction", "fluency"}
    validated = {x.item.concept_id for x in items}
    assert validated == {r[2] for r in held if r[3] == "positive"}
    for c in validated:  # each concept has present and absent texts (the shared negatives are every concept's)
        assert {x.label for x in items if x.criterion == "concept" and x.item.concept_id == c} == {0, 1}


def test_proxy_judge_validates_end_to_end(s3, tiny_model_dir):
    """`axw judge validate --judge proxy` (concept criterion: the classifiers, no model pass): one row per labelled
    concept item, labelled with the judge `axw judge` writes for that model and its config hash."""
    from axwarehouse.judging.proxy import proxy_hash

    code, out, err = axw("--catalog", s3, "judge", "validate", "-c", SET, "--judge", "proxy", "--model",
                         str(tiny_model_dir), "--criterion", "concept", "--dtype", "float32", "--no-progress")
    assert code == 0, err
    with Catalog(s3, read_only=True) as cat:
        n_items = cat.count("generations", "split = 'latent_eval'")
        rows = cat.sql("SELECT DISTINCT judge, judge_config_hash, criterion FROM judge_validation").fetchall()
        n = cat.count("judge_validation")
        macro = cat.sql("SELECT n_concepts, n + n_hard_negative FROM judge_validity_macro").fetchall()
    assert rows == [(f"proxy:{tiny_model_dir}", proxy_hash(42), "concept")]
    assert n == n_items and macro == [(3, n_items)]
