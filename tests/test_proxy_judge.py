"""The offline proxy judge (`axw judge --judge proxy`) on constructed cases whose verdict is known, and as a stage.

Concept: the shipped Concept10 release's training texts train each classifier; held-out (latent-eval) positives of
the concept must rate 2, a text about something else 0. Instruction and fluency: the embedded SmolLM2 calibrated on
its own unsteered answers; a written answer must rate instruction higher under its own instruction than under
another one, and the same answer with its words shuffled, or collapsed into a loop of a short phrase, must rate
fluency 0.
"""

from __future__ import annotations

import json
import random

import pytest

from axwarehouse.catalog import Catalog
from axwarehouse.judging import proxy_measures as pj
from conftest import CONCEPT10, axw

UNRELATED = ("To bake a simple loaf of bread, mix flour, water, salt and yeast, knead the dough for ten minutes, "
             "let it rise in a warm place for an hour, shape it and bake it until the crust is golden.")


def test_thresholds_follow_the_calibration_classes():
    th = pj.calibrate(negatives=[float(v) for v in range(10)], positives=[20.0, 21.0, 22.0, 23.0, 24.0])
    assert (th.low, th.high) == pytest.approx((8.1, 21.0))  # 90 % quantile of negatives, 25 % of positives
    assert th.rate([0.0, 8.0, 8.1, 20.9, 21.0, 99.0, None, float("nan")]) == [0, 0, 1, 1, 2, 2, 0, 0]
    # overlapping classes: no 1 band (high is raised to low)
    assert pj.calibrate([0.0, 10.0], [5.0, 6.0]).rate([8.0, 8.9, 9.0]) == [0, 0, 2]


def test_distinct_token_share_and_half_loop():
    assert pj.distinct_share([5, 6, 7, 8]) == 1.0 and pj.distinct_share([5, 6, 5, 6, 5, 6]) == pytest.approx(2 / 6)
    assert pj.distinct_share([]) is None
    text = "one two three four five six seven eight nine ten"
    looped = pj.half_loop(text, random.Random(0)).split()
    assert len(looped) == 10 and looped[:5] == text.split()[:5]
    tail = looped[5:]  # one phrase of the kept half, repeated
    period = next(k for k in range(1, pj.LOOP_MAX_PHRASE_WORDS + 1) if tail == (tail[:k] * 10)[:5])
    assert " ".join(tail[:period]) in " ".join(looped[:5])


def test_fluency_is_the_lower_of_perplexity_and_repetition_ratings():
    ppl, rep = pj.Thresholds(-6.0, -4.0), pj.Thresholds(0.5, 0.5)
    rate = lambda logp, distinct: pj.rate_fluency(pj.TextMeasure(40, None, logp, distinct), ppl, rep)  # noqa: E731
    assert rate(-3.0, 0.8) == (2, 2, 2)
    assert rate(-3.0, 0.3) == (0, 2, 0)  # a loop the model finds likely: vetoed
    assert rate(-5.0, 0.8) == (1, 1, 2) and rate(-7.0, 0.8) == (0, 0, 2)
    assert rate(None, None) == (0, 0, 0)


def test_measure_texts_scores_each_distinct_pair_once(tiny_model_dir, monkeypatch):
    """Calibration measures every answer without instruction once per instruction it is paired with, and a text
    under the empty instruction is the same pair twice: each distinct (prompt, output) goes through the model once,
    and the measures equal those of each text measured alone."""
    from axwarehouse.model import prefix_logp
    from axwarehouse.model.loader import load

    lm = load(str(tiny_model_dir), "float32")
    rows = []
    real = prefix_logp.shared_prompt_logp
    monkeypatch.setattr(prefix_logp, "shared_prompt_logp",
                        lambda lm, prompts, gens, **kw: rows.append(len(prompts)) or real(lm, prompts, gens, **kw))
    instructions = ["Name a fruit.", "Name a colour.", "Name a fruit.", ""]
    outputs = ["An apple, a pear.", "An apple, a pear.", "An apple, a pear.", "Blue."]
    together = pj.measure_texts(lm, instructions, outputs)
    # given: (fruit, apple), (colour, apple), ("", blue); without: ("", apple), ("", blue) is the given one again
    assert rows == [4]
    monkeypatch.setattr(prefix_logp, "shared_prompt_logp", real)
    alone = [pj.measure_texts(lm, [i], [o])[0] for i, o in zip(instructions, outputs)]
    assert [m.n_tokens for m in together] == [m.n_tokens for m in alone]
    for a, b in zip(together, alone):
        assert a.logp_given_instruction == pytest.approx(b.logp_given_instruction, abs=1e-5)
        assert a.logp_without_instruction == pytest.approx(b.logp_without_instruction, abs=1e-5)
    assert together[3].logp_given_instruction == together[3].logp_without_instruction


@pytest.mark.parametrize("prompt_cache_tokens", [8192, 24])
def test_shared_prompt_logp_equals_each_row_run_alone(tiny_model_dir, prompt_cache_tokens):
    """Prompts run once, together (left-padded), and continuations batched across prompts over their cached prompts
    (right-padded, length-sorted) give each row's mean log-probability as a full forward of that prompt +
    continuation alone (no padding, no cache). Prompts of three lengths and continuations of different lengths share
    batches, so a pad token leaking into attention, a position id off by the padding or a row continuing another
    row's prompt would change them; a prompt-cache budget of 24 positions runs the prompts in several chunks."""
    import torch

    from axwarehouse.model.loader import load
    from axwarehouse.model.prefix_logp import shared_prompt_logp

    lm = load(str(tiny_model_dir), "float32")
    gen = torch.Generator().manual_seed(0)
    draw = lambda n: torch.randint(5, lm.model.config.vocab_size, (n,), generator=gen).tolist()  # noqa: E731
    prompts = [draw(7), draw(3), draw(12)]
    rows = [(prompts[k % 3], draw(n)) for k, n in enumerate([1, 9, 4, 17, 2, 12, 0, 6, 5, 3, 8])]
    got = shared_prompt_logp(lm, [p for p, _ in rows], [c for _, c in rows], batch_tokens=40,
                             prompt_cache_tokens=prompt_cache_tokens)
    for (p, c), value in zip(rows, got):
        if not c:
            assert value is None
            continue
        ids = torch.tensor([p + c])
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(input_ids=ids).logits[0].float(), dim=-1)
        alone = float(logp[len(p) - 1:-1].gather(1, torch.tensor(c)[:, None]).mean())
        assert value == pytest.approx(alone, abs=1e-5), (len(p), len(c))


@pytest.fixture(scope="module")
def concept10(tmp_path_factory):
    path = tmp_path_factory.mktemp("c10") / "catalog.duckdb"
    assert axw("--catalog", path, "import-axbench", CONCEPT10, "-c", "concept10")[0] == 0
    return path


@pytest.fixture(scope="module")
def concept_classifiers(concept10):
    """Per concept (0, 1, 3, 8): the fitted classifier and 3 held-out (latent-eval) positives joined."""
    from axwarehouse.judging.proxy_calibration import concept_training_groups

    with Catalog(concept10, read_only=True) as cat:
        heldout = {c: [t for (t,) in cat.sql(
            "SELECT output FROM generations WHERE concept_set = 'concept10' AND split = 'latent_eval' "
            "AND category = 'positive' AND concept_id = ? ORDER BY example_id LIMIT 3", [c]).fetchall()]
            for c in (0, 1, 3, 8)}
        texts = {c: concept_training_groups(cat, "concept10", c, 42) for c in heldout}
    return {c: (pj.ConceptClassifier.fit(pos, neg, neighbours=near), " ".join(heldout[c]))
            for c, (pos, neg, near) in texts.items()}


def test_concept_threshold_comes_from_own_negatives_while_neighbours_are_trained_on(concept10):
    """Other concepts' positives are negatives of the classifier (trained on: the same model and out-of-fold
    probabilities as when they are passed among the negatives) but do not set ``low``: the CONCEPT_NEG_QUANTILE
    quantile of the concept's own negatives does."""
    from axwarehouse.judging.proxy_calibration import concept_training_groups

    with Catalog(concept10, read_only=True) as cat:
        pos, neg, near = concept_training_groups(cat, "concept10", 7, 42)
    clf = pj.ConceptClassifier.fit(pos, neg, 42, neighbours=near)
    pooled = pj.ConceptClassifier.fit(pos, neg + near, 42)
    assert (len(clf.heldout_negatives), len(clf.heldout_neighbours)) == (len(neg), len(near))
    assert pooled.heldout_negatives == pytest.approx(clf.heldout_negatives + clf.heldout_neighbours, abs=1e-12)
    expected = pj.calibrate(clf.heldout_negatives, clf.heldout_positives, neg_q=pj.CONCEPT_NEG_QUANTILE)
    assert (clf.thresholds.low, clf.thresholds.high) == pytest.approx((expected.low, expected.high), abs=1e-12)
    assert clf.thresholds.low != pytest.approx(pooled.thresholds.low, abs=1e-3)


def test_concept_rates_own_positive_texts_2_and_unrelated_text_0(concept_classifiers):
    for c, (clf, own_text) in concept_classifiers.items():
        own = clf.thresholds.rate(clf.probability([own_text]))
        unrelated = clf.thresholds.rate(clf.probability([UNRELATED]))
        assert (own, unrelated) == ([2], [0]), c
        assert 0 < clf.thresholds.low <= clf.thresholds.high < 1


def glue_words(text: str, k: int = 2) -> str:
    """Every ``k`` neighbouring words written as one ("the audio signal" → "theaudio signal"), as strongly steered
    SmolLM2 writes them ("harmonicflocking", "withmemorytuple")."""
    words = text.split()
    return " ".join("".join(words[i:i + k]) for i in range(0, len(words), k))


def test_concept_reads_concept_words_glued_to_their_neighbours(concept_classifiers):
    """AxBench's concept rubric ignores grammar and coherence: the concept's held-out texts with words glued in
    pairs or triples still rate 2, and glued unrelated text still 0. (A word-level vocabulary sees no feature in
    most glued chunks: with word uni/bigrams these texts rated 1.)"""
    for c, (clf, own_text) in concept_classifiers.items():
        p = clf.probability([glue_words(own_text), glue_words(own_text, 3), glue_words(UNRELATED)])
        assert clf.thresholds.rate(p) == [2, 2, 0], (c, p, clf.thresholds)


def test_concept_classifier_equals_a_tfidf_vectorizer_fitted_per_fold(concept10):
    """The classifier counts each text's n-grams once; each fold (and the final fit) must still see only its own
    vocabulary, document frequencies and IDF: the same out-of-fold probabilities, thresholds and ratings as
    scikit-learn's TfidfVectorizer(**CONCEPT_FEATURES) fitted inside every fold, also when the per-process n-gram
    memo already holds another concept's texts. (Equal up to summation order: the sparse rows list their n-grams
    in another order.)"""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    from axwarehouse.judging.concept_features import CONCEPT_FEATURES, regression
    from axwarehouse.judging.proxy_calibration import concept_training_texts

    with Catalog(concept10, read_only=True) as cat:
        pos, neg = concept_training_texts(cat, "concept10", 0, 42)
        other_concept = concept_training_texts(cat, "concept10", 5, 42)
        other = [t for (t,) in cat.sql("SELECT output FROM generations WHERE concept_set = 'concept10' AND "
                                       "split = 'latent_eval' ORDER BY concept_id, example_id LIMIT 60").fetchall()]
    texts, y = pos + neg, np.array([1] * len(pos) + [0] * len(neg))
    reference = make_pipeline(TfidfVectorizer(**CONCEPT_FEATURES), regression(42))
    folds = StratifiedKFold(n_splits=pj.CV_FOLDS, shuffle=True, random_state=42)
    oof = cross_val_predict(reference, texts, y, cv=folds, method="predict_proba")[:, 1]
    expected = reference.fit(texts, y).predict_proba(other)[:, 1]

    pj.ConceptClassifier.fit(*other_concept, seed=42)  # the per-process n-gram memo now holds other texts too
    clf = pj.ConceptClassifier.fit(pos, neg, seed=42)
    assert clf.heldout_positives == pytest.approx(oof[y == 1].tolist(), abs=1e-12)
    assert clf.heldout_negatives == pytest.approx(oof[y == 0].tolist(), abs=1e-12)
    assert clf.probability(other) == pytest.approx(expected.tolist(), abs=1e-12)
    expected_thresholds = pj.calibrate(oof[y == 0].tolist(), oof[y == 1].tolist(), neg_q=pj.CONCEPT_NEG_QUANTILE)
    assert (clf.thresholds.low, clf.thresholds.high) == pytest.approx(
        (expected_thresholds.low, expected_thresholds.high), abs=1e-12)


INSTRUCTIONS = [
    "Give me a simple recipe for vegetable soup.",
    "Explain how a rainbow forms.",
    "What should I pack for a weekend camping trip?",
    "How can I improve my handwriting?",
    "Explain why the sky looks blue during the day.",
    "Write a short product description for a reusable water bottle.",
    "How do I boil an egg so that the yolk stays soft?",
    "What are the main differences between a lake and a pond?",
]

ANSWERS = {
    "How do I take care of a cactus at home?":
        "Place your cactus in a sunny spot near a window, water it only when the soil is completely dry, "
        "and use a pot with drainage holes and a sandy cactus soil so the roots never sit in water.",
    "What are good exercises to strengthen my back?":
        "Good exercises for a stronger back include bridges, bird dogs, supermans and rows. Do them slowly, "
        "keep your core engaged, and start with two sets of ten repetitions a few times a week.",
}


@pytest.fixture(scope="module")
def smollm2_calibration():
    from axwarehouse.model.loader import load, resolve_dtype

    lm = load("embedded:smollm2", resolve_dtype("auto"))  # as `axw judge` loads it (bfloat16 where native)
    answers = pj.reference_answers(lm, INSTRUCTIONS, max_new_tokens=48, temperature=1.0, seed=42)
    return lm, pj.calibrate_lm(lm, INSTRUCTIONS, answers, seed=42)


@pytest.mark.slow
def test_instruction_rates_real_answer_above_answer_to_other_instruction(smollm2_calibration):
    lm, cal = smollm2_calibration
    (q1, a1), (q2, a2) = ANSWERS.items()
    m = pj.measure_texts(lm, [q1, q1, q2, q2], [a1, a2, a2, a1])
    rating = cal.instruction.rate([x.pmi for x in m])
    assert rating[0] > rating[1] and rating[2] > rating[3], (rating, [x.pmi for x in m], cal.instruction)


@pytest.mark.slow
def test_fluency_rates_shuffled_words_0(smollm2_calibration):
    lm, cal = smollm2_calibration
    rng = random.Random(0)
    texts = list(ANSWERS.values())
    shuffled = [pj.shuffle_words(t, rng) for t in texts]
    m = pj.measure_texts(lm, [""] * 4, texts + shuffled)
    rating = cal.fluency.rate([x.fluency for x in m])
    # shuffled words rate 0; the real answers rate above 0 and at least one is fluent (2). Which of them reaches 2
    # depends on where the calibration's high threshold (25 % quantile of unsteered answers) falls: with the model's
    # own tokenizer the second answer (-4.4 log p/token) sits between the thresholds.
    assert rating[2:] == [0, 0] and min(rating[:2]) >= 1 and max(rating[:2]) == 2, \
        (rating, [x.fluency for x in m], cal.fluency)


def collapse_into_loop(text: str, keep: int = 8, phrase: int = 3) -> str:
    """The first ``keep`` words of ``text``, then its last ``phrase`` kept words repeated up to its word count, as
    strongly steered SmolLM2 loops (", and in, and in, and- and …")."""
    words = text.split()
    loop = words[keep - phrase:keep]
    return " ".join(words[:keep] + (loop * len(words))[:len(words) - keep])


@pytest.mark.slow
def test_fluency_rates_an_answer_collapsed_into_a_loop_0(smollm2_calibration):
    """A language model predicts what it has just read, so a loop has a high log-probability: by perplexity alone
    these loops rate fluency above 0 (asserted, so the case needs the repetition veto), the real answers too.
    With the veto the loops rate 0 and the real answers keep their rating."""
    lm, cal = smollm2_calibration
    texts = list(ANSWERS.values())
    loops = [collapse_into_loop(t) for t in texts]
    m = pj.measure_texts(lm, [""] * 4, texts + loops)
    rated = [pj.rate_fluency(x, cal.fluency, cal.repetition) for x in m]
    info = ([(x.fluency, x.distinct_token_share) for x in m], cal.fluency, cal.repetition, loops)
    assert min(r[1] for r in rated[2:]) >= 1, info  # perplexity alone
    assert [r[0] for r in rated[2:]] == [0, 0], info
    assert [r[0] for r in rated[:2]] == [r[1] for r in rated[:2]] and min(r[0] for r in rated[:2]) >= 1, info


def test_proxy_judge_stage_rates_every_output_once(tiny_warehouse):
    """Default `axw judge` = proxy: 3 ratings in {0,1,2} per output, calibrations stored and named by each rating,
    perplexities written from the same pass; a second run does nothing."""
    catalog_path, common = tiny_warehouse
    base = ["--catalog", catalog_path]
    assert axw(*base, "train", *common, "--method", "diffmean")[0] == 0
    assert axw(*base, "latent", *common, "--method", "diffmean")[0] == 0
    code, _, err = axw(*base, "steer", *common, "--method", "diffmean", "--factors", "0.5,2", "--instructions", "4",
                       "--max-new-tokens", "6", "--no-progress")
    assert code == 0, err
    code, out, err = axw(*base, "judge", "--no-progress")
    assert code == 0, err
    with Catalog(catalog_path, read_only=True) as cat:
        model = cat.sql("SELECT DISTINCT model FROM steering_outputs").fetchall()[0][0]
        n_out = cat.count("steering_outputs")
        rows = cat.sql("SELECT output_id, judge, criterion, score, score_source, parse_ok, raw, run_id "
                       "FROM judge_scores").fetchall()
        cals = {r[0]: r[1:] for r in cat.sql(
            "SELECT calibration_id, criterion, threshold_low, threshold_high, run_id FROM judge_calibration"
        ).fetchall()}
        ppl = cat.count("output_perplexity")
        board = cat.sql("SELECT count(*) FROM steering_scores WHERE score IS NOT NULL AND judge_failures = 'zero'"
                        ).fetchall()[0][0]
    assert f"judge proxy:{model}: {3 * n_out} ratings" in out
    assert len(rows) == 3 * n_out == 3 * 3 * 4 * 2
    assert {r[1] for r in rows} == {f"proxy:{model}"}
    assert {(r[4], r[5]) for r in rows} == {("proxy", True)} and {r[3] for r in rows} <= {0.0, 1.0, 2.0}
    assert sorted({r[2] for r in rows}) == ["concept", "fluency", "instruction"]
    for r in rows:
        raw = json.loads(r[6])
        crit, low, high, run = cals[raw["calibration_id"]]
        assert raw["rubric"] == "proxy-v3" and crit == r[2] and run == r[7]
        assert (raw["threshold_low"], raw["threshold_high"]) == (low, high)
        want = 0 if raw["value"] is None or raw["value"] < low else 1 if raw["value"] < high else 2
        if crit == "fluency":  # the repetition veto: its own calibration, named in the rating
            rcrit, rlow, rhigh, rrun = cals[raw["repetition_calibration_id"]]
            assert (rcrit, rlow, rhigh, rrun) == ("fluency", raw["repetition_threshold"], rlow, r[7])
            veto = raw["repetition_value"] is None or raw["repetition_value"] < rlow
            assert (raw["perplexity_rating"], raw["repetition_rating"]) == (want, 0 if veto else 2)
            want = 0 if veto else want
        assert r[3] == want
    assert len([c for c in cals.values() if c[0] == "concept"]) == 3 and ppl == n_out and board == n_out
    assert len([c for c in cals.values() if c[0] == "fluency"]) == 2
    code, out, _ = axw(*base, "judge", "--no-progress")
    assert code == 0 and "nothing to do" in out
