"""rt: an ahead-of-time compiler and runtime that runs PyTorch models fast on the CPU."""
from .api import CompiledModel, compile, load
from .errors import (ExportError, IndexOutOfRangeError, InputError, IRParseError, KernelError, LoweringError,
                     MissingDependencyError, ModelFileError, ProgramError, RtError, SaveError, UnsupportedOpError,
                     UsageError, VerificationError)

__all__ = ["compile", "load", "CompiledModel", "RtError", "ExportError", "InputError", "IRParseError", "LoweringError",
           "ModelFileError", "UnsupportedOpError", "VerificationError", "KernelError", "IndexOutOfRangeError",
           "ProgramError", "SaveError", "MissingDependencyError", "UsageError"]
