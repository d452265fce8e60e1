"""torch.export -> torch dialect. The only part of rt that imports torch."""
from .importer import import_module

__all__ = ["import_module"]
