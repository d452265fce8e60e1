"""`rt bench`: rt against torch eager, torch.compile and ONNX Runtime (and, for text generation, llama.cpp),
each engine in its own process.

Entry points: `python benchmarks/run.py ...`, `python -m rt.bench ...` and `rt bench ...` (same argv), all
calling `main`. Layout: cases.py (what is measured), worker.py + engines.py + measure.py (run inside each
engine's own process), decode.py + llama_cpp_engine.py + gguf_export.py (the decode cases' engines),
runner.py (the parent: spawns workers, alternates rounds, enforces timeouts), report.py + decode_report.py
(terminal tables + JSON), cli.py (arguments).
"""
from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """`rt bench` with these arguments (default: the command line's), an rt error ending it with one line."""
    import sys

    from ..cli import main as rt_main
    return rt_main(["bench", *(sys.argv[1:] if argv is None else argv)])


__all__ = ["main"]
