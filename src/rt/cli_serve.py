"""`rt serve`: a saved model over HTTP on Ray Serve (rt.serving), on this machine's own Ray (or a
cluster's, with --address) until Ctrl-C, which stops Serve and that Ray and exits 130."""
from __future__ import annotations

import signal
import threading


def serve(args) -> int:
    from . import serving
    try:
        served = serving.deploy(args.model, replicas=args.replicas, threads=args.threads, max_batch=args.max_batch,
                                batch_wait_ms=args.batch_wait_ms, host=args.host, port=args.port,
                                address=args.address)
        batching = (f"batches up to {served.max_batch} rows, waiting at most {args.batch_wait_ms:g} ms"
                    if served.max_batch > 1 else "one request per call")
        print(f"serving {args.model} at {served.url}/predict ({served.replicas} replica(s) x {served.threads} "
              f"thread(s), {batching}); health: {served.url}/health; Ctrl-C stops", flush=True)
        # SIGTERM (a service manager stopping us) ends it as Ctrl-C does: with Serve and Ray shut down
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        threading.Event().wait()                # until Ctrl-C or SIGTERM
    finally:
        serving.shutdown()
    return 0


def add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve a compiled model over HTTP on Ray Serve (needs the serve extra)")
    p.add_argument("model", help="an rt model file (from `rt compile` or CompiledModel.save)")
    p.add_argument("--replicas", type=int, default=1, help="copies of the model, each in its own process")
    p.add_argument("--threads", type=int, default=None, help="rt threads per replica, each on a CPU Ray reserves "
                                                             "(default: the CPUs shared among the replicas)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (0.0.0.0: every interface)")
    p.add_argument("--max-batch", type=int, default=None,
                   help="the most rows one batched call runs, for a model whose dim 0 is dynamic (default: its "
                        "bound, at most 16; 1: one request per call)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0,
                   help="the longest a request waits for others to share its call")
    p.add_argument("--address", default=None, help="a Ray cluster to join (`ray start --head` prints it); "
                                                   "default: start Ray on this machine")
    p.set_defaults(func=serve)
