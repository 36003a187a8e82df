"""Defer importing a heavy module until one of its attributes is used.

`axw status` lists methods, which means importing every method file, and those files ``import torch`` at the
top; the listing itself only needs their names, settings and source hashes. Deferring torch there keeps the
command well under a second and a half instead of the several seconds torch takes to import.

Written here rather than using ``importlib.util.LazyLoader``: on Python 3.11 the ``import torch`` statement itself
reads ``__spec__`` of the module, which makes LazyLoader load it at once. The stand-in below has a real
``__spec__`` and loads the module on the first other attribute (or submodule) anyone asks for, then copies the real
module's namespace into itself so later lookups are plain attribute reads.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types


class _Deferred(types.ModuleType):
    def __getattr__(self, attr: str):  # called only for attributes the stand-in does not have yet
        if attr.startswith("__") and attr not in ("__path__", "__file__", "__version__", "__all__"):
            raise AttributeError(attr)
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        real = importlib.import_module(name)
        self.__dict__.update({k: v for k, v in real.__dict__.items() if k != "__class__"})
        return getattr(real, attr)


def defer(*names: str) -> None:
    """Put stand-ins for the top-level packages ``names`` into ``sys.modules`` (those not imported yet)."""
    for name in names:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        stand_in = _Deferred(name)
        stand_in.__spec__ = spec
        sys.modules[name] = stand_in


def _torch_mode(mode: str):
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            import torch

            with getattr(torch, mode)():
                return fn(*args, **kwargs)
        return wrapper
    return decorate


# ``@torch.inference_mode()`` / ``@torch.no_grad()`` evaluated when a file is imported would import torch; these
# enter the same context when the function is called.
inference_mode = _torch_mode("inference_mode")
no_grad = _torch_mode("no_grad")
