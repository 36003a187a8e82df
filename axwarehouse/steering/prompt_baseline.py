"""The prompt steering baseline (AxBench ``PromptSteering``, docs/axbench-recipes.md §4.3): an LLM writes, once per concept, a prompt
that makes a model bring the concept into every answer; the *unsteered* target model then answers
``" {steering_prompt}\\n\\nQuestion: {instruction}"``. Calls go through the cached LLM client (`llm_calls`), so a
re-run asks nothing again. The wording of the request is ours.
"""

from __future__ import annotations

from axwarehouse.llm import LLMClient, LLMRequest

METHOD = "prompt"

PROMPT_REQUEST = """STEERING PROMPT: Write a prompt (an instruction to an AI assistant) that makes the assistant \
bring the concept below into every answer it gives, even when the question has nothing to do with the concept and \
even if the answer becomes odd. The prompt must name or clearly describe the concept.
Concept: {concept}
Return only the prompt itself, with no quotes, title or explanation."""

FALLBACK = ("In every answer you give, talk about {concept}, even if the question is unrelated to it and even if "
            "the answer becomes nonsensical.")


def steered_instruction(steering_prompt: str, instruction: str) -> str:
    """The user message of a prompt-steered generation (AxBench's ``steered_input`` content)."""
    return f" {steering_prompt}\n\nQuestion: {instruction}"


def _clean(text: str | None) -> str:
    return (text or "").strip().strip('"').strip("'").strip()


def steering_prompts(client: LLMClient, concepts: dict[int, str], seed: int = 42) -> dict[int, tuple[str, bool]]:
    """concept_id -> (steering prompt, used_fallback). One call per concept; an empty or failed answer falls back
    to a fixed sentence naming the concept (as AxBench does)."""
    ids = sorted(concepts)
    reqs = [LLMRequest.user(PROMPT_REQUEST.format(concept=concepts[c]), temperature=1.0, max_tokens=128,
                            seed=seed + c, purpose="steering_prompt", tag=str(c)) for c in ids]
    outcomes = client.run(reqs, validate=lambda comp: (_clean(comp.text), None if _clean(comp.text) else "empty"))
    out = {}
    for c, o in zip(ids, outcomes):
        text = o.value if o.ok else ""
        out[c] = (text, False) if text else (FALLBACK.format(concept=concepts[c]), True)
    return out
