"""torch.export -> torch dialect. The only part of rt that imports torch."""
from .converters import supported_overloads
from .importer import export_program, import_module, import_program

__all__ = ["import_module", "import_program", "export_program", "supported_overloads"]
