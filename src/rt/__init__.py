"""rt: an ahead-of-time compiler and runtime that runs PyTorch models fast on the CPU."""
from .errors import (ExportError, IndexOutOfRangeError, InputError, IRParseError, KernelError, LoweringError,
                     MissingDependencyError, ModelFileError, ProgramError, RtError, SaveError, UnsupportedOpError,
                     UsageError, VerificationError)
from .openmp_wait import bound_spinning
from .target import Target

bound_spinning()      # before any libgomp loads: see openmp_wait.py

# The compiled runtime loads on first use of these, so the IR and lowering packages (rt.dialects,
# rt.lowering) import without it.
_API = ("compile", "load", "CompiledModel")
_GENERATE = ("compile_generator", "generate", "Generator")


def __getattr__(name: str):
    if name in _API:
        from . import api
        return getattr(api, name)
    if name in _GENERATE:
        from . import generation
        return getattr(generation, name)
    raise AttributeError(f"module 'rt' has no attribute {name!r}")


__all__ = [*_API, *_GENERATE, "Target", "RtError", "ExportError", "InputError", "IRParseError", "LoweringError",
           "ModelFileError", "UnsupportedOpError", "VerificationError", "KernelError", "IndexOutOfRangeError",
           "ProgramError", "SaveError", "MissingDependencyError", "UsageError"]
