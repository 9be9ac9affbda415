"""``fcn-tf1 cluster-local``: a whole training cluster on this machine, for experiments and tests.

API::

    free_ports(count, host)                       -> [int]: distinct free TCP ports
    local_cluster(workers, ps, host)              -> {"worker": [...], "ps": [...]}
    launch(train_argv, workers=2, ps=1, ...)      -> LaunchResult

``launch`` starts every task as ``python -m fcn_tf1.cli train TRAIN_ARGV`` (the
``fcn-tf1 cluster-local`` command passes ``--run-config FILE``: the config it
built once, so every task trains the same one) with
its own ``TF_CONFIG`` (worker 0 is the chief), streams their output line by
line with a ``[worker:1]`` prefix, and stops them in an order that loses
nothing: when every worker has exited, the ps tasks are sent SIGTERM; on
SIGINT/SIGTERM to the launcher, on a failed worker or on the time limit, the
workers are sent SIGTERM first (the chief saves a checkpoint), then the ps
tasks; anything still alive after ``grace_secs`` is killed. The children run
in their own session, so a Ctrl-C in the terminal reaches the launcher only
and the shutdown keeps that order. The launcher itself never imports
TensorFlow.
"""
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from fcn_tf1 import signals

LaunchResult = collections.namedtuple(
    "LaunchResult", ["exit_code", "returncodes", "pids", "cluster", "seconds", "reason"])
EXIT_INTERRUPTED = 130
EXIT_TIMEOUT = 124


def free_ports(count, host="127.0.0.1"):
    """``count`` distinct TCP ports that are free on ``host`` right now.

    The sockets are held open until all ports are chosen (so they differ) and
    then closed: another program could still take one before the servers
    start, a race that is harmless on a test machine.
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def local_cluster(workers=2, ps=1, host="127.0.0.1"):
    """A cluster of ``workers`` worker and ``ps`` ps tasks on free ports of ``host``."""
    if workers < 1 or ps < 1:
        raise ValueError(f"need at least one worker and one ps task, got {workers} and {ps}")
    ports = free_ports(workers + ps, host)
    return {"worker": [f"{host}:{p}" for p in ports[:workers]],
            "ps": [f"{host}:{p}" for p in ports[workers:]]}


class _Children:
    """The task processes, their output threads and an orderly shutdown."""

    def __init__(self, log, grace_secs):
        self.procs = {}  # "worker:0" -> Popen
        self.threads = []
        self.log = log
        self.grace_secs = grace_secs
        self._lock = threading.Lock()

    def start(self, name, argv, env):
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, errors="replace",
                                start_new_session=True)
        self.procs[name] = proc
        thread = threading.Thread(target=self._stream, args=(name, proc), daemon=True,
                                  name=f"output-{name}")
        thread.start()
        self.threads.append(thread)

    def _stream(self, name, proc):
        for line in proc.stdout:
            with self._lock:
                self.log(f"[{name}] {line.rstrip()}")
        proc.stdout.close()

    def alive(self, names):
        return [n for n in names if self.procs[n].poll() is None]

    def stop(self, names):
        """SIGTERM, then SIGKILL after the grace period; waits until all have exited."""
        for name in self.alive(names):
            self.procs[name].send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_secs
        while self.alive(names) and time.monotonic() < deadline:
            time.sleep(0.05)
        for name in self.alive(names):
            self.log(f"[cluster-local] {name} did not stop within {self.grace_secs:g} s: killed")
            self.procs[name].kill()
        for name in names:
            self.procs[name].wait()

    def finish(self):
        for thread in self.threads:
            thread.join(timeout=5)


def _status(returncode):
    """A failed task's status as the launcher's exit status (killed by a signal: 1)."""
    return returncode if returncode and returncode > 0 else 1


def launch(train_argv, workers=2, ps=1, host="127.0.0.1", grace_secs=30.0, timeout_secs=None,
           log=print, command=None, env=None):
    """Runs a local cluster until its workers finish; see the module docstring.

    Args:
      train_argv: options of ``fcn-tf1 train`` given to every task (same config everywhere).
      workers, ps: task counts (worker 0 is the chief).
      host: address the tasks listen on.
      grace_secs: how long a task may take to stop after SIGTERM before it is killed.
      timeout_secs: optional limit on the whole run (then exit code 124).
      log: print-like function for the prefixed output lines.
      command: the argv before ``train_argv`` (default: this Python's
        ``-m fcn_tf1.cli train``).
      env: base environment of the tasks (default: this process's).

    Returns:
      LaunchResult: ``exit_code`` (0 when every worker exited with 0; the first
      failing worker's status; 130 when interrupted; 124 on time-out),
      ``returncodes`` and ``pids`` by task name, ``cluster``, ``seconds`` and
      ``reason`` (None, or why the run was stopped early).
    """
    cluster = local_cluster(workers, ps, host)
    command = command or [sys.executable, "-m", "fcn_tf1.cli", "train"]
    base_env = dict(os.environ if env is None else env)
    base_env["PYTHONUNBUFFERED"] = "1"  # lines must stream as they are printed
    worker_names = [f"worker:{i}" for i in range(workers)]
    ps_names = [f"ps:{i}" for i in range(ps)]
    children = _Children(log, grace_secs)
    start = time.monotonic()
    reason, exit_code = None, 0
    log(f"[cluster-local] {workers} worker(s), {ps} ps: " + json.dumps(cluster))
    with signals.StopRequest() as interrupt:
        try:
            for name in ps_names + worker_names:
                job, index = name.split(":")
                task_env = dict(base_env, TF_CONFIG=json.dumps(
                    {"cluster": cluster, "task": {"type": job, "index": int(index)}}))
                children.start(name, list(command) + list(train_argv), task_env)
            while children.alive(worker_names):
                failed = [n for n in worker_names if children.procs[n].poll() not in (None, 0)]
                dead_ps = [n for n in ps_names if children.procs[n].poll() is not None]
                if interrupt.signal_name:
                    reason, exit_code = f"stopped by {interrupt.signal_name}", EXIT_INTERRUPTED
                elif timeout_secs is not None and time.monotonic() - start > timeout_secs:
                    reason, exit_code = f"time limit of {timeout_secs:g} s reached", EXIT_TIMEOUT
                elif failed:
                    code = children.procs[failed[0]].returncode
                    reason, exit_code = f"{failed[0]} failed with status {code}", _status(code)
                elif dead_ps:
                    reason, exit_code = f"{dead_ps[0]} exited early", 1
                if reason:
                    log(f"[cluster-local] {reason}: stopping the workers")
                    break
                time.sleep(0.1)
            children.stop(worker_names)
            if not reason:
                failed = [n for n in worker_names if children.procs[n].returncode != 0]
                if failed:
                    code = children.procs[failed[0]].returncode
                    reason, exit_code = f"{failed[0]} failed with status {code}", _status(code)
        finally:  # also on errors in the launcher itself: never leave a task behind
            children.stop(list(children.procs))
            children.finish()
    returncodes = {n: p.returncode for n, p in children.procs.items()}
    seconds = time.monotonic() - start
    log(f"[cluster-local] done in {seconds:.1f} s: "
        + ", ".join(f"{n} exit {c}" for n, c in returncodes.items())
        + (f" ({reason})" if reason else ""))
    return LaunchResult(exit_code, returncodes, {n: p.pid for n, p in children.procs.items()},
                        cluster, seconds, reason)
