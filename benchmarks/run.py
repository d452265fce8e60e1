"""Benchmark entry point: `python benchmarks/run.py [--quick] [--cases ...] [--engines ...]` (same as `rt bench`)."""
import sys

from rt.bench import main

if __name__ == "__main__":
    sys.exit(main())
