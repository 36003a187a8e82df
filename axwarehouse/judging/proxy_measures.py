"""The offline proxy judge: AxBench's three criteria (0–2) from measurements instead of an LLM's verdict.

A 135M-parameter instruct model cannot follow AxBench's judge rubric (its ratings collapse to one value), and no
better small judge ships offline. This judge rates each steered output from signals that exist offline and do
not depend on the steering method under test:

* **concept** — a text classifier of the concept (TF-IDF of character 3–5-grams inside words + logistic
  regression, scikit-learn) trained on the concept's *training* texts: its positives against the negatives, its
  hard negatives and the other concepts' positives of the set (so a text about a neighbouring concept is not rated
  present). No activations are used, so no steering method is favoured. Measurement: P(concept | output).
  Character n-grams, not words: strongly steered small models glue tokens into non-words ("harmonicflocking",
  "withmemorytuple") and bend words ("frequencyque", "reverberifi"); a word-level vocabulary sees none of the
  concept in them, while AxBench's LLM judge, told to ignore grammar and coherence, reads through them.
* **instruction** — pointwise mutual information of output and instruction under the *unsteered* target model,
  per token: mean log p(output | instruction) − mean log p(output | empty instruction), both as the assistant
  turn of the model's chat template. Per token (not summed) so answers of different lengths compare; the same
  normalisation is used to calibrate and to rate.
* **fluency** — two measurements, the rating is the lower of their two ratings:

  - the unsteered model's mean log-probability of the output with an empty instruction (= −log perplexity).
    Without the instruction, so an off-topic but well-formed answer is not marked disfluent (the instruction
    criterion covers relevance); the conditional perplexity stays reported beside the ratings.
  - the share of distinct tokens among the output's tokens (the target model's tokenizer): 1 − seq-rep-1 of
    Welleck et al. (2019, "Neural text generation with unlikelihood training"). Perplexity alone cannot see
    degenerate repetition: a language model predicts what it has just read, so a loop (", and in, and in, and-
    and …", "un un un other un human un") gets a *high* log-probability, and strongly steered outputs that
    collapse into such loops rated fluency 1 or 2. AxBench's fluency rubric rates repetitive text 0. This
    measurement is a veto, not a grade: below its one threshold the fluency rating is 0, above it the perplexity
    rating stands (the rubric names repetition only as a reason for 0; how fluent a non-repetitive text is stays
    the perplexity's call). Tokens, not words, so loops of punctuation and spaces ("_-_-_------", runs of
    no-break spaces) count as well. The share falls with length for any text, so it is calibrated on answers of
    the judged outputs' token budget (see below).

Every measurement becomes a 0/1/2 rating through two thresholds calibrated on texts whose verdict is known, a
*negative* class (should rate 0) and a *positive* class (should rate 2) — :func:`calibrate`:

* low  = the :data:`NEG_QUANTILE` quantile of the negatives (at most 10 % of them reach 1),
* high = the :data:`POS_QUANTILE` quantile of the positives (75 % of them rate 2), raised to ``low`` when the
  classes overlap that much (then there is no 1 band). The repetition veto has ``high = low`` (0 or 2).

The classes: concept — held-out (out-of-fold) classifier probabilities of the concept's training positives vs
its own training negatives (shared and hard negatives; ``low`` at their :data:`CONCEPT_NEG_QUANTILE` quantile —
the other concepts' positives are trained on as negatives but left out of the threshold, a rule chosen by
cross-validation on the train split); instruction — unsteered answers to the instructions under their own instruction vs under
other instructions; fluency (perplexity) — unsteered answers vs the same answers with their words shuffled;
fluency (repetition) — unsteered answers vs the same answers collapsed into a loop half-way (:func:`half_loop`: the
first half of the words kept, the rest one short phrase of that half repeated), the mildest text we still call
degenerate, so anything at least as repetitive rates 0. The thresholds and the class summaries are stored in
``judge_calibration`` and each rating's raw JSON names its calibrations.

Written by us (no library implements this judge); scikit-learn supplies the classifier and the folds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

RUBRIC = "proxy-v3"  # v2: fluency also vetoes degenerate repetition; v3: concept threshold from own negatives only
NEG_QUANTILE = 0.9
# The concept's ``low``: this quantile of the out-of-fold probabilities of its negatives, other concepts' positives
# left out (chosen by cross-validation on the train split, docs/proxy-judge.md)
CONCEPT_NEG_QUANTILE = 0.95
POS_QUANTILE = 0.25
CV_FOLDS = 5
N_MISMATCHED = 3  # answers to other instructions scored under each calibration instruction
LOOP_MAX_PHRASE_WORDS = 4  # the repeated phrase of a half_loop calibration negative: 1 … this many words
REPETITION_MEASURE = "distinct_token_share"


@dataclass(frozen=True)
class Thresholds:
    """Measurement → rating: < low → 0, < high → 1, else 2 (higher measurement = better)."""

    low: float
    high: float

    def rate(self, values: Sequence[float | None]) -> list[int]:
        """Ratings of ``values``; a missing measurement (None/NaN: empty output) rates 0."""
        out = []
        for v in values:
            if v is None or not math.isfinite(v):
                out.append(0)
            else:
                out.append(0 if v < self.low else 1 if v < self.high else 2)
        return out


def _measured(values: Sequence[float | None]) -> np.ndarray:
    """The measurements a calibration uses: missing (None) and non-finite ones left out."""
    return np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)


def calibrate(negatives: Sequence[float], positives: Sequence[float], neg_q: float = NEG_QUANTILE,
              pos_q: float = POS_QUANTILE) -> Thresholds:
    """Thresholds from measurements of texts that should rate 0 (negatives) and 2 (positives); see module doc."""
    neg, pos = _measured(negatives), _measured(positives)
    if not len(neg) or not len(pos):
        raise ValueError("calibration needs at least one negative and one positive measurement")
    low = float(np.quantile(neg, neg_q))
    high = max(float(np.quantile(pos, pos_q)), low)
    return Thresholds(low, high)


def calibrate_veto(negatives: Sequence[float], neg_q: float = NEG_QUANTILE) -> Thresholds:
    """One threshold (``low == high``): the ``neg_q`` quantile of texts that should rate 0; at or above it rates 2
    (the rating only says whether the text is degenerate; another measurement grades the rest)."""
    neg = _measured(negatives)
    if not len(neg):
        raise ValueError("calibration needs at least one negative measurement")
    low = float(np.quantile(neg, neg_q))
    return Thresholds(low, low)


def auroc(negatives: Sequence[float], positives: Sequence[float]) -> float:
    """How well the measurement separates the calibration classes (reported with the calibration)."""
    from sklearn.metrics import roc_auc_score

    y = [0] * len(negatives) + [1] * len(positives)
    return float(roc_auc_score(y, list(negatives) + list(positives)))


# -- concept: per-concept text classifier ------------------------------------------------------------------------
# Its features (character n-grams within word boundaries) are CONCEPT_FEATURES in concept_features.py; the name
# below labels them in the judge's config.
CONCEPT_FEATURES_NAME = "tfidf-char_wb-3-5-mindf2-sublinear"


@dataclass
class ConceptClassifier:
    """A fitted per-concept classifier and the thresholds chosen on its out-of-fold probabilities."""

    counts: object
    model: object
    thresholds: Thresholds
    heldout_negatives: list[float]
    heldout_positives: list[float]
    heldout_neighbours: list[float] = field(default_factory=list)

    @classmethod
    def fit(cls, positives: Sequence[str], negatives: Sequence[str], seed: int = 42,
            neighbours: Sequence[str] = ()) -> ConceptClassifier:
        """Fit on all training texts; thresholds from ``CV_FOLDS``-fold out-of-fold probabilities (each text
        scored by a classifier that did not see it: the n-gram vocabulary, its document frequencies and IDF are
        each fold's own, as with a TF-IDF vectorizer fitted per fold).

        ``neighbours`` (other concepts' positives) are trained on as negatives but left out of the ``low``
        threshold, which is the :data:`CONCEPT_NEG_QUANTILE` quantile of the ``negatives`` alone: the texts most
        like what the judge rates decide how many absent texts may reach 1 (docs/proxy-judge.md)."""
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        from axwarehouse.judging.concept_features import SharedNgramCounts, classifier

        if len(positives) < CV_FOLDS or len(negatives) < CV_FOLDS:
            raise ValueError(f"a concept classifier needs at least {CV_FOLDS} positive and {CV_FOLDS} negative "
                             f"training texts (got {len(positives)} and {len(negatives)})")
        texts = list(positives) + list(negatives) + list(neighbours)
        y = np.array([1] * len(positives) + [0] * (len(negatives) + len(neighbours)))
        counts = SharedNgramCounts()
        x = counts.fit_transform(texts)
        folds = StratifiedKFold(n_splits=CV_FOLDS, shuffle=True, random_state=seed)
        oof = cross_val_predict(classifier(seed), x, y, cv=folds, method="predict_proba")[:, 1]
        n_pos, n_neg = len(positives), len(negatives)
        pos, neg, near = oof[:n_pos].tolist(), oof[n_pos:n_pos + n_neg].tolist(), oof[n_pos + n_neg:].tolist()
        return cls(counts, classifier(seed).fit(x, y), calibrate(neg, pos, neg_q=CONCEPT_NEG_QUANTILE), neg, pos,
                   near)

    def probability(self, texts: Sequence[str]) -> list[float]:
        return self.model.predict_proba(self.counts.transform([t or "" for t in texts]))[:, 1].tolist()


# -- instruction and fluency: log-probabilities under the unsteered model ---------------------------------------
def distinct_share(ids: Sequence[int]) -> float | None:
    """Distinct tokens / tokens (1 − seq-rep-1): 1.0 when no token repeats, small for a loop; None when empty."""
    return len(set(ids)) / len(ids) if len(ids) else None


@dataclass(frozen=True)
class TextMeasure:
    """Mean per-token log-probabilities and the distinct-token share of one output (None when it has no tokens)."""

    n_tokens: int
    logp_given_instruction: float | None
    logp_without_instruction: float | None
    distinct_token_share: float | None = None

    @property
    def pmi(self) -> float | None:
        if self.logp_given_instruction is None or self.logp_without_instruction is None:
            return None
        return self.logp_given_instruction - self.logp_without_instruction

    @property
    def fluency(self) -> float | None:
        return self.logp_without_instruction


def rate_fluency(m: TextMeasure, perplexity: Thresholds, repetition: Thresholds) -> tuple[int, int, int]:
    """(fluency rating, perplexity rating, repetition rating): the fluency rating is the lower of the two."""
    by_ppl = perplexity.rate([m.fluency])[0]
    by_rep = repetition.rate([m.distinct_token_share])[0]
    return min(by_ppl, by_rep), by_ppl, by_rep


def _mean_logp(lm, pairs: list[tuple[tuple[int, ...], tuple[int, ...]]]) -> list[float | None]:
    """Mean log p(generation | prompt) per (prompt ids, generation ids) pair; each distinct pair is scored once
    (calibration scores every answer without instruction once per instruction pairing, and a text scored under
    the empty instruction is the same pair twice), and each distinct prompt is run through the model once
    (:func:`axwarehouse.model.prefix_logp.shared_prompt_logp`: every row shares the empty instruction's prompt, and
    the outputs of one instruction share its prompt)."""
    from axwarehouse.model.prefix_logp import shared_prompt_logp

    unique = list(dict.fromkeys(pairs))
    values = shared_prompt_logp(lm, [p for p, _ in unique], [g for _, g in unique])
    logp = dict(zip(unique, values))
    return [logp[pair] for pair in pairs]


def measure_texts(lm, instructions: Sequence[str], outputs: Sequence[str]) -> list[TextMeasure]:
    """Per (instruction, output): mean log p(output | instruction) and mean log p(output | empty instruction)
    under ``lm`` (teacher-forced forward passes, batched; each distinct prompt–output pair is scored once)."""
    from axwarehouse.model.chat import ChatFormat

    chat = ChatFormat.of(lm.tokenizer)
    gens = [tuple(lm.tokenizer.encode(o or "", add_special_tokens=False)) for o in outputs]
    cache: dict[str, tuple[int, ...]] = {}

    def prompt(text: str) -> tuple[int, ...]:
        if text not in cache:
            cache[text] = tuple(chat.prompt_ids(text))
        return cache[text]

    given = [(prompt(i or ""), g) for i, g in zip(instructions, gens)]
    without = [(prompt(""), g) for g in gens]
    logp = _mean_logp(lm, given + without)
    given_logp, without_logp = logp[:len(gens)], logp[len(gens):]
    return [TextMeasure(len(g), a, b, distinct_share(g)) for g, a, b in zip(gens, given_logp, without_logp)]


def shuffle_words(text: str, rng: random.Random) -> str:
    """The same words in a random order (a fluency negative that keeps the vocabulary)."""
    words = text.split()
    rng.shuffle(words)
    return " ".join(words)


def half_loop(text: str, rng: random.Random, max_phrase_words: int = LOOP_MAX_PHRASE_WORDS) -> str:
    """The text collapsed into a loop half-way (a repetition negative): its first half of words kept, then one
    phrase of 1 … ``max_phrase_words`` consecutive words from that half repeated up to the original word count
    ("… water it only when the soil is dry, dry, dry, dry, …")."""
    words = text.split()
    if not words:
        return ""
    keep = words[:max(1, len(words) // 2)]
    k = rng.randint(1, min(max_phrase_words, len(keep)))
    start = rng.randrange(len(keep) - k + 1)
    phrase = keep[start:start + k]
    tail = (phrase * len(words))[:len(words) - len(keep)]
    return " ".join(keep + tail)


@dataclass
class LMCalibration:
    """Instruction and fluency thresholds from unsteered answers, with the class measurements behind them."""

    instruction: Thresholds
    fluency: Thresholds
    repetition: Thresholds
    matched_pmi: list[float]
    mismatched_pmi: list[float]
    answer_fluency: list[float]
    shuffled_fluency: list[float]
    answer_distinct: list[float]
    looped_distinct: list[float]


def calibrate_lm(lm, instructions: Sequence[str], answers: Sequence[str], seed: int = 42,
                 n_mismatched: int = N_MISMATCHED) -> LMCalibration:
    """Thresholds from unsteered ``answers[i]`` to ``instructions[i]``.

    instruction: PMI of each answer with its own instruction (positives) vs with ``n_mismatched`` other
    instructions (negatives); fluency: each answer's mean log p without instruction (positives) vs the same
    answer with its words shuffled (negatives); repetition: each answer's distinct-token share (positives) vs
    the same answer's :func:`half_loop` (negatives, the veto's threshold). Answers without tokens are left out."""
    keep = [k for k, a in enumerate(answers) if (a or "").strip()]
    if len(keep) < 2:
        raise ValueError("instruction calibration needs unsteered answers to at least 2 instructions")
    instr = [instructions[k] for k in keep]
    ans = [answers[k] for k in keep]
    n = len(ans)
    k_other = min(n_mismatched, n - 1)
    rng = random.Random(seed)
    shuffled = [shuffle_words(a, rng) for a in ans]
    pairs_i = instr + [instr[(i + s) % n] for i in range(n) for s in range(1, k_other + 1)]
    pairs_a = ans + [ans[i] for i in range(n) for _ in range(k_other)]
    m = measure_texts(lm, pairs_i, pairs_a)
    matched = [x.pmi for x in m[:n]]
    mismatched = [x.pmi for x in m[n:]]
    fluent = [x.fluency for x in m[:n]]
    broken = [x.fluency for x in measure_texts(lm, [""] * n, shuffled)]
    looped = [half_loop(a, rng) for a in ans]  # drawn after the shuffles: the shuffled negatives stay as they were
    tok = lambda t: lm.tokenizer.encode(t, add_special_tokens=False)  # noqa: E731
    distinct = [x.distinct_token_share for x in m[:n]]
    looped_distinct = [distinct_share(tok(t)) for t in looped]
    clean = lambda xs: [float(x) for x in xs if x is not None]  # noqa: E731
    return LMCalibration(calibrate(clean(mismatched), clean(matched)), calibrate(clean(broken), clean(fluent)),
                         calibrate_veto(clean(looped_distinct)), clean(matched), clean(mismatched), clean(fluent),
                         clean(broken), clean(distinct), clean(looped_distinct))


def reference_answers(lm, instructions: Sequence[str], max_new_tokens: int, temperature: float, seed: int,
                      batch_size: int = 32) -> list[str]:
    """Unsteered answers of ``lm`` to ``instructions`` (per-instruction seeds, batched like steering)."""
    import hashlib

    from axwarehouse.model.chat import ChatFormat
    from axwarehouse.steering import GenRow, generate_rows
    from axwarehouse.steering.intervention import Steerer

    chat = ChatFormat.of(lm.tokenizer)
    rows = [GenRow(tuple(chat.prompt_ids(i)), None, 0.0,
                   int(hashlib.sha256(f"{seed}|{i}".encode()).hexdigest()[:8], 16)) for i in instructions]
    steerer = Steerer(lm.model, 0, prefer="hook")  # no edit is ever installed: plain generation
    outs = generate_rows(lm, steerer, rows, max_new_tokens=max_new_tokens, temperature=temperature,
                         batch_size=batch_size)
    return [o.text for o in outs]
