"""IR core and the three dialects. Importing this package registers every op."""
from . import fused_ops, planned_ops, torch_ops  # noqa: F401  (registration side effects)
from .ir import Module, Operation, Storage, TensorType, Value
from .registry import REGISTRY
from .text import parse_module, print_module
from .verifier import verify_module

__all__ = ["Module", "Operation", "Storage", "TensorType", "Value", "REGISTRY", "parse_module",
           "print_module", "verify_module"]
