"""One framework's worker process: hosts its timed cases, runs them when the coordinator asks.

    python -m bench.bench_worker --framework ours|keras|torch --threads N --inter-threads N

Each framework runs in its own process, so TensorFlow's and PyTorch's thread
pools never coexist (both would size themselves to the cores) and the thread
settings are applied before either runtime starts. The coordinator
(bench_interleave.py) sends one JSON object per line on stdin and reads one
JSON reply per line; the protocol uses the process's original stdout, and
anything a library prints goes to stderr.

Requests:
    {"op": "setup", "case": NAME, "kind": KIND, "params": {...}, "warmup": N}
    {"op": "run", "case": NAME, "n": N}        -> {"ok": true, "seconds": ..., "items": ...}
    {"op": "analyze", "case": NAME}            -> {"ok": true, "flops": ..., "top_ops": ...}
    {"op": "quit"}
A failure replies {"ok": false, "error": "..."} (or "skip": "reason").
"""
import argparse
import json
import os
import sys

from . import bench_cases


class Worker:
    """The cases of one framework and the handling of one request."""

    def __init__(self, framework, threads, inter_threads):
        self.framework, self.threads, self.inter_threads = framework, threads, inter_threads
        self.cases = {}

    def handle(self, request):
        op = request["op"]
        if op == "setup":
            case = bench_cases.make_case(self.framework, request["kind"], request["params"],
                                         self.threads, self.inter_threads)
            self.cases[request["case"]] = case
            for _ in range(int(request.get("warmup", 1))):
                case.run(1)
            return {"ok": True}
        if op == "run":
            return dict(self.cases[request["case"]].run(int(request["n"])), ok=True)
        if op == "analyze":
            return dict(bench_cases.analyze(self.cases[request["case"]], self.threads,
                                            self.inter_threads), ok=True)
        raise ValueError(f"unknown request {op!r}")

    def close(self):
        for case in self.cases.values():
            if hasattr(case, "close"):
                case.close()


def serve(worker, requests, replies):
    """Answers each JSON line of ``requests`` on ``replies`` until 'quit' or end of input."""
    for line in requests:
        request = json.loads(line)
        if request["op"] == "quit":
            break
        try:
            reply = worker.handle(request)
        except bench_cases.Skip as skip:
            reply = {"ok": False, "skip": str(skip)}
        except Exception as err:  # reported to the coordinator, which names the case
            reply = {"ok": False, "error": f"{type(err).__name__}: {' '.join(str(err).split())}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    worker.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--framework", choices=("ours", "keras", "torch"), required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--inter-threads", type=int, required=True)
    args = parser.parse_args(argv)
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not break the protocol
    bench_cases.configure_threads(args.framework, args.threads, args.inter_threads)
    serve(Worker(args.framework, args.threads, args.inter_threads), sys.stdin, replies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
