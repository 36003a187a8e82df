"""Method registry: a plain dict from lowercase name to class, filled by importing every module in this package."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import pkgutil
import sys
from pathlib import Path
from typing import Any

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


METHOD_FILES_ENV = "AXW_METHOD_FILES"


def load_method_file(path: str | Path) -> None:
    """Import a method file from outside the package (its @register calls add it to the registry)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise AxwError(f"method file {path} not found ({METHOD_FILES_ENV})")
    name = f"axw_external_{path.stem}_{abs(hash(str(path))) % 10**8}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so inspect (Method.source_hash) finds the file like a package module
    spec.loader.exec_module(module)


def discover() -> dict[str, type[Method]]:
    """Import every module of ``axwarehouse.methods`` once, so their @register calls run, then every file listed in
    ``$AXW_METHOD_FILES`` (os.pathsep-separated): a new method needs only its file."""
    global _DISCOVERED
    if not _DISCOVERED:
        for mod in pkgutil.iter_modules([str(Path(__file__).resolve().parent)]):
            if mod.name not in ("base", "registry"):
                importlib.import_module(f"axwarehouse.methods.{mod.name}")
        for item in filter(None, os.environ.get(METHOD_FILES_ENV, "").split(os.pathsep)):
            load_method_file(item)
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


def explicit(names: list[str] | tuple[str, ...]) -> set[str]:
    """Method names the user listed by name (not through ``all``): those must run or fail loudly."""
    return {n.strip().lower() for n in names if n.strip().lower() != "all"}


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``["sae-a.sae=/x", "probe.epochs=2"]`` → {"sae-a": {"sae": "/x"}, "probe": {"epochs": 2}}.

    Values are converted to the type of the method's Config field; unknown methods or fields are AxwErrors.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, fld = key.strip().lower().partition(".")
        if not sep or not dot or not fld:
            raise AxwError(f"--set expects METHOD.FIELD=VALUE, got {item!r}")
        fields = {f.name: f for f in dataclasses.fields(get(method).Config)}
        if fld not in fields:
            raise AxwError(f"method {method!r} has no setting {fld!r} (settings: {', '.join(fields) or 'none'})")
        kind = type(fields[fld].default)
        try:
            if kind is bool:
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                val: Any = value.lower() in ("true", "1")
            else:
                val = kind(value)
        except ValueError as exc:
            raise AxwError(f"--set {key}: {value!r} is not a valid {kind.__name__}") from exc
        out.setdefault(method, {})[fld] = val
    return out
