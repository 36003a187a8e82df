"""Concept-detection and steering methods, one file each, registered by lowercase name."""

from axwarehouse.methods.base import Artifact, ConceptData, Method
from axwarehouse.methods.registry import REGISTRY, discover, get, method_names, register

__all__ = ["Artifact", "ConceptData", "Method", "REGISTRY", "discover", "get", "method_names", "register"]
