"""Method registry: a plain dict from lowercase name to class, filled by importing every module in this package."""

from __future__ import annotations

import importlib
import pkgutil

from axwarehouse.errors import AxwError
from axwarehouse.methods.base import Method

REGISTRY: dict[str, type[Method]] = {}
_DISCOVERED = False


def register(name: str):
    """Class decorator: ``@register("diffmean")``."""
    def deco(cls: type[Method]) -> type[Method]:
        if name != name.lower():
            raise ValueError(f"method names are lowercase: {name!r}")
        if name in REGISTRY and REGISTRY[name] is not cls:
            raise ValueError(f"method {name!r} is registered twice")
        cls.name = name
        REGISTRY[name] = cls
        return cls
    return deco


def discover() -> dict[str, type[Method]]:
    """Import every module of ``axwarehouse.methods`` once, so their @register calls run."""
    global _DISCOVERED
    if not _DISCOVERED:
        import axwarehouse.methods as pkg

        for mod in pkgutil.iter_modules(pkg.__path__):
            if mod.name not in ("base", "registry"):
                importlib.import_module(f"axwarehouse.methods.{mod.name}")
        _DISCOVERED = True
    return REGISTRY


def method_names(names: list[str] | tuple[str, ...], evaluation: str | None = None) -> list[str]:
    """Validate ``--method`` values; ``all`` expands to every registered method (for ``evaluation`` if given)."""
    reg = discover()
    if not names:
        raise AxwError("no method given (use --method NAME; registered: " + ", ".join(sorted(reg)) + ")")
    out: list[str] = []
    for raw in names:
        name = raw.strip().lower()
        if name == "all":
            out += [n for n, c in sorted(reg.items()) if evaluation is None or evaluation in c.evaluations]
        elif name in reg:
            out.append(name)
        else:
            raise AxwError(f"unknown method {raw!r}; registered: {', '.join(sorted(reg))}")
    return list(dict.fromkeys(out))


def get(name: str) -> type[Method]:
    reg = discover()
    if name not in reg:
        raise AxwError(f"unknown method {name!r}; registered: {', '.join(sorted(reg))}")
    return reg[name]
