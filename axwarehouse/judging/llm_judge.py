"""The three-criterion LLM judge of steered generations (docs/axbench-recipes.md §5.1–§5.2): rubric prompts (our wording), the answer
parser, and the expected score from token probabilities.

Each criterion is one user message asking for a short explanation followed by ``Rating: [[score]]`` on 0–2.
Parsing follows AxBench (text after the **last** ``Rating:``, first line, brackets removed, trailing ``.``, quotes
and ``*`` stripped, parsed as a number). A failure is stored as NULL with the reason (``empty``, ``no_rating``,
``not_a_number``, ``out_of_range``) and the raw answer, so it is counted and never mistaken for a verdict; the
steering views then score it 0 as AxBench does (``judge_failures = 'zero'``, the default) or leave it out
(``'drop'``). These prompts are our wording; :mod:`axwarehouse.judging.rubric` reads AxBench's own on request.

Where the backend exposes the judge's token distribution (the embedded backend: we re-run the judge model over
its own answer), the *rating slot* is read too (:func:`rating_slot`): E = Σ_k p(k)·k over k ∈ {0, 1, 2}, with p
renormalised over those three digits, at the position of the judge's rating digit. When the answer has no
parseable rating, the slot is constrained: the judge's explanation + ``Rating: [[`` and the most probable digit
(constrained decoding of one token) becomes the score, recorded with ``score_source = 'constrained'`` and the
parse failure kept (a 135M-parameter judge rarely follows the free format; a hosted judge's failures stay NULL).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from axwarehouse import lazy_imports

CRITERIA = ("concept", "instruction", "fluency")

_TAIL = """First write a short explanation (one or two sentences). Then end your answer with the rating in exactly \
this form: Rating: [[score]]"""

PROMPTS = {
    "concept": """JUDGE CONCEPT: You are an impartial judge. Decide how clearly the concept below appears in the \
text fragment. Ignore grammar, coherence and whether the text makes sense: only ask whether the concept is there, \
and point out the words that refer to it.
Scale: 0 = the concept is absent; 1 = the concept is somewhat present, but minimal or awkward; 2 = the concept is \
fully and naturally present.

Concept: {concept}

Text fragment start:
{generation}
Text fragment end.

""" + _TAIL,
    "instruction": """JUDGE INSTRUCTION: You are an impartial judge. Decide how closely the text fragment is \
related to the topic of the instruction below. Only judge topical relatedness: ignore grammar, coherence and how \
informative or complete the text is.
Scale: 0 = unrelated to the instruction; 1 = somewhat or indirectly related; 2 = clearly and directly related.

Instruction: {instruction}

Text fragment start:
{generation}
Text fragment end.

""" + _TAIL,
    "fluency": """JUDGE FLUENCY: You are an impartial judge. Rate only the fluency of the text fragment below: \
ignore whether it is complete, relevant or informative. Note unnatural phrasing, awkward transitions, grammatical \
errors and repetition.
Scale: 0 = not fluent: incomprehensible, broken or highly repetitive; 1 = somewhat fluent, with noticeable errors \
or awkward phrasing; 2 = fluent, nearly perfect.

Text fragment start:
{generation}
Text fragment end.

""" + _TAIL,
}

MARKER = "Rating:"


@dataclass(frozen=True)
class Parsed:
    score: float | None
    error: str | None  # None when score is valid

    @property
    def ok(self) -> bool:
        return self.error is None


def judge_prompt(criterion: str, concept: str, instruction: str, generation: str) -> str:
    return PROMPTS[criterion].format(concept=concept, instruction=instruction, generation=generation)


def parse_rating(text: str | None) -> Parsed:
    """Score 0..2 from a judge answer, or NULL with the reason (docs/axbench-recipes.md §5.2 rules, failures kept as failures)."""
    if text is None or not text.strip():
        return Parsed(None, "empty")
    if MARKER not in text:
        return Parsed(None, "no_rating")
    tail = text.rsplit(MARKER, 1)[1].strip()
    first = tail.splitlines()[0] if tail else ""
    value = first.replace("[", "").replace("]", "").strip().rstrip(".").strip().strip("\"'*").strip()
    try:
        score = float(value)
    except ValueError:
        return Parsed(None, "not_a_number")
    if not 0.0 <= score <= 2.0 or score != score:
        return Parsed(None, "out_of_range")
    return Parsed(score, None)


_DIGIT_AFTER = re.compile(r"[\s\[\*\"']*([0-9])")


def rating_offset(text: str) -> int | None:
    """Character offset of the rating digit after the last ``Rating:`` (None when there is none)."""
    if MARKER not in text:
        return None
    start = text.rindex(MARKER) + len(MARKER)
    m = _DIGIT_AFTER.match(text, start)
    return m.start(1) if m else None


def digit_token_ids(tokenizer) -> list[int] | None:
    """Token ids of "0", "1", "2" when each is a single token (else None: no expected score)."""
    ids = [tokenizer.encode(str(k), add_special_tokens=False) for k in range(3)]
    return [i[0] for i in ids] if all(len(i) == 1 for i in ids) else None


def rating_prefix(answer: str | None) -> tuple[str, bool]:
    """The judge's answer up to its rating digit, and whether the judge wrote that rating itself.

    Parsed answers are cut right before the digit the judge wrote. Otherwise the rating slot is *constrained*:
    the judge's explanation (its text before any ``Rating:``) followed by ``\nRating: [[``, so the digit the
    judge model puts there is its verdict in the requested format (constrained decoding of one token)."""
    text = answer or ""
    if parse_rating(text).ok:
        pos = rating_offset(text)
        if pos is not None:
            return text[:pos], True
    explanation = text.split(MARKER, 1)[0].rstrip()
    return (explanation + "\n" if explanation else "") + MARKER + " [[", False


@lazy_imports.inference_mode
def rating_slot(lm, prompts: Sequence[str], answers: Sequence[str | None], batch_size: int = 64,
                batch_tokens: int = 4096) -> list[tuple[float | None, float | None]]:
    """Per (prompt, answer): (constrained rating = the most probable of "0"/"1"/"2" in the rating slot,
    expected score = Σ p(k)·k with p renormalised over those three digits), read from the judge model.

    The judge's input is re-rendered exactly as the embedded backend renders it (chat template with the
    generation prompt, no extra special tokens) followed by :func:`rating_prefix` of the answer. (None, None)
    when the tokenizer has no single-token digits. Inputs run in length-sorted, right-padded batches of at most
    ``batch_size`` rows and ``batch_tokens`` padded tokens, and the output head runs only at each row's last
    position (the vocabulary-sized logits of every other position were most of the memory and a fifth of the
    work).
    """
    from axwarehouse.model.capture import length_batches, pad_batch
    from axwarehouse.model.token_nll import kept_logits

    tok = lm.tokenizer
    digits = digit_token_ids(tok)
    out: list[tuple[float | None, float | None]] = [(None, None)] * len(prompts)
    if digits is None:
        return out
    seqs = [tok.encode(tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                               add_generation_prompt=True) + rating_prefix(answer)[0],
                       add_special_tokens=False) for prompt, answer in zip(prompts, answers)]
    values = torch.tensor([0.0, 1.0, 2.0])
    device = lm.model.device
    for batch in length_batches([len(s) for s in seqs], batch_tokens, max_batch=batch_size):
        ids, mask = pad_batch([seqs[i] for i in batch], tok.pad_token_id)
        last = torch.zeros_like(mask, dtype=torch.bool)
        last[torch.arange(len(batch)), mask.sum(1) - 1] = True  # one kept position per row, in row order
        logits = kept_logits(lm.model, last.to(device), input_ids=ids.to(device), attention_mask=mask.to(device),
                             use_cache=False)
        p = torch.softmax(logits.reshape(len(batch), -1)[:, digits].float().cpu(), dim=-1)
        for i, e, k in zip(batch, (p @ values).tolist(), p.argmax(-1).tolist()):
            out[i] = (float(k), float(e))
    return out
