"""USD price per 1M tokens (input, output) for the hosted models people use for generation and judging.

Prices are OpenAI's list prices for standard (non-batch) requests as of early 2025; update the table when they
change. Models not listed (local servers, embedded models) cost nothing unless a price is passed explicitly, and
unknown hosted models get ``None`` so the ledger shows "unknown" rather than a made-up $0.
"""

from __future__ import annotations

PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
}

def price_for(backend: str, model: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens; dated snapshots (gpt-4o-mini-2024-07-18) use their family's price.

    embedded: free. openai-compatible: the table price when the server proxies a listed model (e.g. a gateway
    serving gpt-4o-mini), else free (self-hosted: the researcher pays for the machine, not the call).
    openai: the table price, or None (unknown) for a model the table lacks.
    """
    if backend == "embedded":
        return (0.0, 0.0)
    for name in sorted(PRICES_PER_MTOK, key=len, reverse=True):
        if model == name or model.startswith(name + "-"):
            return PRICES_PER_MTOK[name]
    return (0.0, 0.0) if backend == "openai-compatible" else None


def cost_usd(backend: str, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """Cost of one call, or None when the model's price is unknown. Output tokens use the output price
    (AxBench mixed the two up: it multiplied the input-token count by the output rate, docs/axbench-recipes.md §7.12)."""
    price = price_for(backend, model)
    if price is None:
        return None
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6
