"""Steering: the shared intervention (pyvene, hook fallback) and batched steered generation."""

from axwarehouse.steering.generate import generate_batch, generate_rows
from axwarehouse.steering.rows import GenOutput, GenRow
from axwarehouse.steering.intervention import EDITS, AdditionEdit, Steerer, SteeringEdit, register_edit

__all__ = ["AdditionEdit", "EDITS", "GenOutput", "GenRow", "Steerer", "SteeringEdit", "generate_batch",
           "generate_rows", "register_edit"]
