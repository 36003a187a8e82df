"""Judge answer parsing: well-formed, malformed, out-of-range and empty answers; failures are NULL, never 0."""

from __future__ import annotations

import pytest

from axwarehouse.steering.judge import CRITERIA, judge_prompt, parse_rating, rating_offset


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


def test_expected_score_from_the_judge_distribution(tiny_model_dir):
    """E = sum p(k) k over the three digit tokens, at the rating position; NULL where no rating was parsed."""
    import torch

    from axwarehouse.lm.loader import load
    from axwarehouse.steering.judge import digit_token_ids, expected_scores

    lm = load(str(tiny_model_dir))
    assert digit_token_ids(lm.tokenizer) is not None
    prompt = judge_prompt("fluency", "", "", "Hello world.")
    answers = ["Fine.\nRating: [[2]]", "Fine.\nRating: [[0]]", "no rating", None]
    got = expected_scores(lm, [prompt] * 4, answers)
    assert got[2] is None and got[3] is None
    assert 0.0 <= got[0] <= 2.0 and got[0] == pytest.approx(got[1])  # same prefix up to the digit
    # by hand: the digit distribution after the rendered prefix
    tok = lm.tokenizer
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                   add_generation_prompt=True) + "Fine.\nRating: [["
    ids = torch.tensor([tok.encode(text, add_special_tokens=False)])
    with torch.inference_mode():
        logits = lm.model(input_ids=ids).logits[0, -1, digit_token_ids(tok)]
    p = torch.softmax(logits.float(), -1)
    assert got[0] == pytest.approx(float(p[1] + 2 * p[2]), abs=1e-5)
