"""`axw models pull|list`: the embedded models' per-user cache (axwarehouse/model/model_cache.py)."""

from __future__ import annotations

from collections.abc import Callable

from axwarehouse.model import model_cache


def pull_models(names: list[str], echo: Callable[[str], None] = print) -> str:
    """Fetch the named embedded models (default: the one `axw demo` uses; ``all``: every one) into the cache."""
    if not names:
        names = [model_cache.DEFAULT_PULL]
    if "all" in names:
        names = list(model_cache.MODELS)
    lines = []
    for name in dict.fromkeys(names):
        model = model_cache.lookup(name)
        path, fetched = model_cache.pull(model, echo=echo)
        lines.append(f"{model.spec}: {'fetched' if fetched else 'already cached'} {path} "
                     f"({path.stat().st_size / 1e6:.0f} MB)")
    return "\n".join(lines)


def list_models() -> str:
    """Every embedded model: cached or not, where, how big, from which pinned wheels."""
    lines = [f"model cache: {model_cache.cache_dir()} (set {model_cache.ENV_CACHE} to move it)"]
    for e in model_cache.list_cache():
        state = f"{e.size / 1e6:.0f} MB" if e.size is not None else "not cached (fetched on first use)"
        lines.append(f"  {e.spec:<22} {state:<34} {e.path}\n  {'':<22} from {e.source}")
    return "\n".join(lines)
