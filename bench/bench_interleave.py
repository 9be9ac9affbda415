"""The coordinator: one worker process per framework, every case timed in interleaved rounds.

    Case(name, framework, kind, params, units, warmup)
    WorkerProcess(framework, threads, inter_threads, log_dir)   .request(dict) -> dict
    start_workers(frameworks, ...)  /  setup_cases(workers, cases, log) -> (ready, skipped)
    time_interleaved(workers, cases, repeats, settle_secs, log)  -> {case: [reply, ...]}
    summarize(replies)  -> median seconds, items per second, spread

Method: every case is set up and warmed up first (the workers in parallel;
nothing is timed then). Then each round runs every case's timed block once,
one at a time, so while a case is timed every other worker is idle, blocked
on reading its next request. The order rotates by one case every round, so no
case always follows the same neighbour, and ``settle_secs`` of idleness
separates two blocks (thread pools that spin after their work, e.g. OpenMP's,
have gone to sleep by then). Figures are medians over the rounds.
"""
import collections
import json
import os
import pathlib
import statistics
import subprocess
import time

from fcn_tf1.errors import FcnError

from .children import child_env, module_command

Case = collections.namedtuple("Case", ["name", "framework", "kind", "params", "units", "warmup"])
Case.__doc__ = """One timed block: ``units`` steps/batches/runs of ``kind`` in ``framework``'s worker."""


class WorkerDied(FcnError):
    """A worker process ended without answering (the message has the end of its log)."""


class WorkerProcess:
    """``bench_worker.py`` for one framework; stderr goes to ``log_dir/FRAMEWORK.log``."""

    def __init__(self, framework, threads, inter_threads, log_dir):
        self.framework = framework
        self.log_path = pathlib.Path(log_dir) / f"{framework}.log"
        env = child_env(TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
                        KERAS_BACKEND="tensorflow", PYTHONUNBUFFERED="1")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                module_command("bench_worker", "--framework", framework, "--threads", threads,
                               "--inter-threads", inter_threads),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env)

    def send(self, request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()

    def receive(self):
        line = self.proc.stdout.readline()
        if not line:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise WorkerDied(f"the {self.framework} worker died (exit {self.proc.wait()}): "
                             + " | ".join(tail))
        return json.loads(line)

    def request(self, request):
        self.send(request)
        return self.receive()

    def close(self, timeout=60):
        if self.proc.poll() is None:
            try:
                self.send({"op": "quit"})
                self.proc.wait(timeout=timeout)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def start_workers(frameworks, threads, inter_threads, log_dir):
    return {f: WorkerProcess(f, threads, inter_threads, log_dir) for f in frameworks}


def setup_cases(workers, cases, log=print):
    """Builds and warms up every case, the workers in parallel.

    Returns:
        (ready cases in the given order, {case name: reason} of those that
        were skipped or failed).
    """
    for case in cases:
        workers[case.framework].send({"op": "setup", "case": case.name, "kind": case.kind,
                                      "params": case.params, "warmup": case.warmup})
    ready, skipped = [], {}
    for case in cases:  # replies of one worker come in the order of its requests
        reply = workers[case.framework].receive()
        if reply["ok"]:
            ready.append(case)
        else:
            skipped[case.name] = reply.get("skip") or reply.get("error")
            log(f"  {case.name}: {'skipped' if 'skip' in reply else 'FAILED'}: "
                f"{skipped[case.name]}")
    return ready, skipped


def time_interleaved(workers, cases, repeats, settle_secs=0.5, log=print):
    """Times every case's block once per round, ``repeats`` rounds (see the module docstring).

    Returns:
        {case name: [reply dict of each round]} for the cases that never failed.
    """
    results = {case.name: [] for case in cases}
    failed = set()
    for round_index in range(repeats):
        shift = round_index % max(len(cases), 1)
        for case in cases[shift:] + cases[:shift]:
            if case.name in failed:
                continue
            reply = workers[case.framework].request({"op": "run", "case": case.name,
                                                     "n": case.units})
            if not reply["ok"]:
                failed.add(case.name)
                log(f"  {case.name}: FAILED in round {round_index + 1}: {reply.get('error')}")
            else:
                results[case.name].append(reply)
            time.sleep(settle_secs)
        log(f"  round {round_index + 1}/{repeats} done")
    return {name: replies for name, replies in results.items() if name not in failed}


def summarize(replies):
    """Median over the rounds of a case's replies.

    Returns:
        dict: ``seconds`` (median block time), ``items`` (per block),
        ``per_second`` (items / median seconds), ``seconds_per_item``,
        ``spread`` ((max - min) / median of the block times), ``rounds``, and the
        median of every other numeric field of the replies (e.g. forward_seconds).
    """
    seconds = [r["seconds"] for r in replies]
    median = statistics.median(seconds)
    items = replies[0]["items"]
    out = {"seconds": median, "items": items, "per_second": items / median,
           "seconds_per_item": median / items, "spread": (max(seconds) - min(seconds)) / median,
           "rounds": len(replies), "all_seconds": seconds}
    for key, value in replies[0].items():
        if key not in out and key != "ok" and isinstance(value, (int, float)):
            out[key] = statistics.median(r[key] for r in replies)
    return out
