"""Judge answer parsing: well-formed, malformed, out-of-range and empty answers; failures are NULL, never 0."""

from __future__ import annotations

import pytest

from axwarehouse.judging.llm_judge import CRITERIA, judge_prompt, parse_rating, rating_offset


@pytest.mark.parametrize("answer, score", [
    ("The fragment talks about cats throughout.\nRating: [[2]]", 2.0),
    ("Mentions it once.\nRating: [[1]]\n", 1.0),
    ("Absent.\nRating: [[0]]", 0.0),
    ("Rating: [[0]] at first, but on reflection\nRating: [[1.5]].", 1.5),  # the last Rating: wins
    ("Explanation.\nRating: **2**", 2.0),
    ("Explanation.\nRating: \"1\"", 1.0),
    ("Rating: [[2]]\nSome trailing words on the next line", 2.0),  # only the first line after it counts
])
def test_well_formed(answer, score):
    parsed = parse_rating(answer)
    assert parsed.ok and parsed.score == score


@pytest.mark.parametrize("answer, error", [
    ("The text is fine, I would give it two.", "no_rating"),
    ("rating: [[2]]", "no_rating"),  # AxBench's marker is case-sensitive
    ("Rating: [[two]]", "not_a_number"),
    ("Rating:", "not_a_number"),
    ("Rating: [[1]] and also [[2]]", "not_a_number"),
    ("Rating: [[3]]", "out_of_range"),
    ("Rating: [[-1]]", "out_of_range"),
    ("Rating: [[2.5]]", "out_of_range"),
    ("Rating: [[nan]]", "out_of_range"),
    ("", "empty"),
    ("   \n ", "empty"),
    (None, "empty"),
])
def test_failures_are_null_with_a_reason(answer, error):
    parsed = parse_rating(answer)
    assert parsed.score is None and not parsed.ok and parsed.error == error


def test_rating_offset_points_at_the_digit():
    text = "Because.\nRating: [[1]]"
    assert text[rating_offset(text)] == "1"
    assert rating_offset("Rating: [[x]]") is None
    assert rating_offset("no marker") is None


def test_prompts_embed_their_inputs_and_ask_for_the_format():
    for crit in CRITERIA:
        p = judge_prompt(crit, "ocean waves", "Explain tides.", "GEN-TEXT")
        assert "GEN-TEXT" in p and "Rating: [[score]]" in p
    assert "ocean waves" in judge_prompt("concept", "ocean waves", "x", "y")
    assert "Explain tides." in judge_prompt("instruction", "c", "Explain tides.", "y")
    assert "ocean waves" not in judge_prompt("fluency", "ocean waves", "Explain tides.", "y")


def test_rating_slot_reads_the_judge_distribution(tiny_model_dir):
    """Parsed answers: E = sum p(k) k at the judge's own digit. Unparsed answers: the slot after the explanation +
    'Rating: [[' is decoded under constraint (argmax over 0/1/2), never left as a silent 0."""
    import torch

    from axwarehouse.model.loader import load
    from axwarehouse.judging.llm_judge import digit_token_ids, rating_prefix, rating_slot

    lm = load(str(tiny_model_dir))
    tok = lm.tokenizer
    assert digit_token_ids(tok) is not None
    prompt = judge_prompt("fluency", "", "", "Hello world.")
    answers = ["Fine.\nRating: [[2]]", "Fine.\nRating: [[0]]", "Looks fine to me", None]
    assert rating_prefix(answers[0]) == ("Fine.\nRating: [[", True)
    assert rating_prefix(answers[2]) == ("Looks fine to me\nRating: [[", False)
    assert rating_prefix("Bad. Rating: [[9]]") == ("Bad.\nRating: [[", False)
    assert rating_prefix(None) == ("Rating: [[", False)
    got = rating_slot(lm, [prompt] * 4, answers)
    assert all(k in (0.0, 1.0, 2.0) and 0.0 <= e <= 2.0 for k, e in got)
    assert got[0] == pytest.approx(got[1])  # same prefix up to the digit

    def by_hand(prefix: str) -> tuple[float, float]:
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True) + prefix
        ids = torch.tensor([tok.encode(text, add_special_tokens=False)])
        with torch.inference_mode():
            logits = lm.model(input_ids=ids).logits[0, -1, digit_token_ids(tok)]
        p = torch.softmax(logits.float(), -1)
        return float(p.argmax()), float(p[1] + 2 * p[2])

    for answer, (k, e) in zip(answers, got):
        hk, he = by_hand(rating_prefix(answer)[0])
        assert k == hk and e == pytest.approx(he, abs=1e-5)
