"""Helpers shared by tests, benchmarks and the demo (the model zoo lives in rt.testing.models)."""
