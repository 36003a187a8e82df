"""The one place where a steering edit touches the model: a pyvene intervention at the output of decoder block L.

A steering *edit* maps the residual stream ``h`` [batch, positions, d] of one padded batch to its edited value. Each
batch row carries its own parameters (concept direction, factor, magnitude), so a whole concepts × factors ×
instructions sweep runs as one padded batch per step. AxBench's rank-1 rule (docs/axbench-recipes.md §2.4, §4.2) is
:class:`AdditionEdit`: ``h + f·a_c·w_c`` at **every** position, prompt and generated tokens alike.

Later methods (ReFT-r1, SSV, SAE clamping, LoReFT) add an edit class here (or in their method file) and register
it with :func:`register_edit`; the hook / pyvene wiring below is shared, never copied.

Wiring: a pyvene ``IntervenableModel`` with one ``block_output`` intervention at layer L (pyvene knows the block
paths of Llama, Gemma, Qwen, Mistral, GPT-2, ...; a family it lacks whose blocks sit at ``model.layers``, such as
Gemma-3, gets Llama's mapping). ``keep_last_dim=True`` makes pyvene hand the intervention the
[batch, positions, d] tensor instead of flattening positions. ``unit_locations=None`` with
``intervene_on_prompt=True`` edits every position of the prompt forward and of every cached decoding step, which is
what AxBench's ``generate(..., intervene_on_prompt=True, unit_locations=None)`` does. For a model family pyvene has
no mapping for, :class:`Steerer` falls back to a plain forward hook on the same block (same edit, same positions).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from axwarehouse import lazy_imports

from axwarehouse.model.loader import decoder_layers


class SteeringEdit:
    """Base class: ``edit(h)`` returns the edited residual stream of a [batch, positions, d] tensor."""

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class AdditionEdit(SteeringEdit):
    """h + delta_b at every position of row b; ``deltas`` [batch, d] = factor · magnitude · direction per row.

    ``h + 0.0 == h`` exactly in IEEE arithmetic, so a factor-0 row is bit for bit the unsteered computation even
    when other rows of the same batch are steered.
    """

    deltas: torch.Tensor  # [batch, d]

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        d = self.deltas.to(device=hidden.device, dtype=hidden.dtype)
        if hidden.shape[0] != d.shape[0]:
            raise RuntimeError(f"steering batch mismatch: {hidden.shape[0]} rows, {d.shape[0]} deltas")
        return hidden + d[:, None, :]

    @classmethod
    def of(cls, directions: torch.Tensor, strengths: torch.Tensor) -> AdditionEdit:
        """Per-row delta = strength (factor · a_c) × direction; directions [batch, d], strengths [batch]."""
        return cls(directions.float() * strengths.float()[:, None])


EDITS: dict[str, Callable[..., SteeringEdit]] = {"addition": AdditionEdit.of}


def register_edit(kind: str, factory: Callable[..., SteeringEdit]) -> None:
    """Make a steering rule available by name (a method declares ``steering = "<kind>"``)."""
    if kind in EDITS and EDITS[kind] is not factory:
        raise ValueError(f"steering edit {kind!r} is registered twice")
    EDITS[kind] = factory


def _pyvene():
    """Import pyvene without its import-time print about the optional nnsight backend (it would pollute CLI
    output, which must stay machine-readable for `--format csv/json`)."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        import pyvene
    return pyvene


def _register_llama_layout(model) -> bool:
    """Teach pyvene a model family it has no mapping for (Gemma-3, Qwen-3, ...) when its decoder blocks sit where
    Llama's do (``model.layers``): the ``block_output`` of layer L is then the same hook point, so Llama's module and
    dimension mappings apply as they are. Returns True when a mapping was added."""
    from pyvene.models import intervenable_modelcard as cards
    from transformers import LlamaForCausalLM

    cls = type(model)
    if cls in cards.type_to_module_mapping:
        return False
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or decoder_layers(model) is not layers:
        return False
    cards.type_to_module_mapping[cls] = cards.type_to_module_mapping[LlamaForCausalLM]
    cards.type_to_dimension_mapping[cls] = cards.type_to_dimension_mapping[LlamaForCausalLM]
    return True


def _pyvene_intervention_class():
    pv = _pyvene()

    class RowSteeringIntervention(pv.SourcelessIntervention):
        """pyvene side of the edit: holds the current batch's :class:`SteeringEdit` and applies it."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs, keep_last_dim=True)
            self.edit: SteeringEdit | None = None

        def forward(self, base, source=None, subspaces=None, **kwargs):
            return base if self.edit is None else self.edit(base)

    return RowSteeringIntervention


class Steerer:
    """Generate (or run forward) with an edit at the output of decoder block ``layer`` of ``model``.

    ``backend`` is "pyvene" when pyvene can wrap the model, else "hook" (and ``fallback_reason`` says why).
    """

    def __init__(self, model, layer: int, prefer: str = "pyvene"):
        self.model = model
        self.layer = layer
        self.block = decoder_layers(model)[layer]
        self.backend = "hook"
        self.fallback_reason: str | None = None
        self._pv = None
        self._intervention = None
        if prefer == "pyvene":
            try:
                pv = _pyvene()
                _register_llama_layout(model)
                cls = _pyvene_intervention_class()
                self._intervention = cls()
                config = pv.IntervenableConfig(representations=[pv.RepresentationConfig(
                    layer=layer, component="block_output", intervention=self._intervention)])
                self._pv = pv.IntervenableModel(config, model=model)
                self._pv.disable_model_gradients()
                self.backend = "pyvene"
            except Exception as exc:  # pyvene has no module mapping for this family: hook the block ourselves
                self.fallback_reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                self._pv = None

    @contextmanager
    def _hooked(self, edit: SteeringEdit | None):
        def hook(_module, _inputs, output):
            if isinstance(output, tuple):
                return (edit(output[0]),) + tuple(output[1:])
            return edit(output)

        handle = self.block.register_forward_hook(hook) if edit is not None else None
        try:
            yield
        finally:
            if handle is not None:
                handle.remove()

    @lazy_imports.inference_mode
    def generate(self, inputs: dict[str, torch.Tensor], edit: SteeringEdit | None, **gen_kwargs) -> torch.Tensor:
        """``model.generate`` with ``edit`` applied at every position (None: the plain, unsteered model)."""
        if edit is None:
            return self.model.generate(**inputs, **gen_kwargs)
        if self._pv is not None:
            self._intervention.edit = edit
            try:
                _, out = self._pv.generate(dict(inputs), unit_locations=None, intervene_on_prompt=True,
                                           **gen_kwargs)
            finally:
                self._intervention.edit = None
            return out
        with self._hooked(edit):
            return self.model.generate(**inputs, **gen_kwargs)

    @lazy_imports.inference_mode
    def forward(self, inputs: dict[str, torch.Tensor], edit: SteeringEdit | None):
        """One forward pass with the edit (used by tests and by methods that score steered text)."""
        if edit is None:
            return self.model(**inputs)
        with self._hooked(edit):
            return self.model(**inputs)
