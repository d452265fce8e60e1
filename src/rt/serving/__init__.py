"""Serving saved rt models over HTTP on Ray Serve (the optional extra `pip install ".[serve]"`).

`deploy(path, replicas=, threads=, port=, max_batch=, batch_wait_ms=)` returns the URL once every
replica has loaded the file (torch-free); `shutdown()` stops it; `rt serve model.rt` does both from the
command line. The HTTP API is in README.md ("Serving"). `import rt` imports nothing of this package,
and this package imports Ray only when a function here is called."""
from .deploy import Served, application, deploy, shutdown

__all__ = ["Served", "application", "deploy", "shutdown"]
