"""``fcn-tf1 cluster-local``: a whole training cluster on this machine, for experiments and tests.

API::

    free_ports(count, host)                       -> [int]: distinct free TCP ports
    local_cluster(workers, ps, host)              -> {"worker": [...], "ps": [...]}
    enter_private_network()                       this thread into a loopback-only netns
    launch(train_argv, workers=2, ps=1, ...)      -> LaunchResult

``launch`` starts every task as ``python -m fcn_tf1.cli train --cluster FILE
--job-name JOB --task-index I TRAIN_ARGV`` (the ``fcn-tf1 cluster-local``
command passes ``--run-config FILE``: the config it built once, so every task
trains the same one; worker 0 is the chief; a TF_CONFIG of the launcher's
environment is not passed on), streams their output line by
line with a ``[worker:1]`` prefix, and stops them in an order that loses
nothing: when every worker has exited, the ps tasks are sent SIGTERM; on
SIGINT/SIGTERM to the launcher, on a failed worker or on the time limit, the
workers are sent SIGTERM first (the chief saves a checkpoint), then the ps
tasks; anything still alive after ``grace_secs`` is killed. The children run
in their own session, so a Ctrl-C in the terminal reaches the launcher only
and the shutdown keeps that order. The launcher itself never imports
TensorFlow.

TensorFlow's servers listen on every interface, unauthenticated, whatever
address the cluster names (see fcn_tf1.parallel.cluster). So the tasks are
started in a network namespace of their own whose only interface is
loopback (``isolate``): nothing outside can reach them. Creating one needs
CAP_SYS_ADMIN (root); without it ``isolate="auto"`` goes on with a warning
and ``isolate=True`` refuses to start.
"""
import collections
import ctypes
import fcntl
import json
import os
import pathlib
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

from fcn_tf1 import signals
from fcn_tf1.errors import FcnError

LaunchResult = collections.namedtuple(
    "LaunchResult", ["exit_code", "returncodes", "pids", "cluster", "seconds", "reason",
                     "isolated"])
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


_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_IFREQ = "16sh22x"  # struct ifreq: the name, then the flags in the union


def enter_private_network():
    """Moves the calling *thread* into a new network namespace and brings its loopback up.

    Namespaces belong to threads: processes started from this thread afterwards
    share the namespace, the rest of the process keeps its own. The new
    namespace has no interface but ``lo``, so a server listening on every
    interface there is reachable from that namespace only.

    Raises:
      OSError: the kernel refused (EPERM without CAP_SYS_ADMIN).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        name, flags = struct.unpack(_IFREQ, fcntl.ioctl(
            sock, _SIOCGIFFLAGS, struct.pack(_IFREQ, b"lo", 0)))
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | _IFF_UP))


def _start_isolated(children, starts, isolate, log):
    """Starts every task from one thread, in a private network namespace when possible."""
    outcome = {}

    def run():
        if isolate:
            try:
                enter_private_network()
                outcome["isolated"] = True
            except OSError as err:
                outcome["refused"] = err.strerror or str(err)
                if isolate is True:
                    return
        try:
            for name, argv, env in starts:
                children.start(name, argv, env)
        except BaseException as err:  # re-raised in the launcher's thread
            outcome["error"] = err
    thread = threading.Thread(target=run, name="cluster-local-start")
    thread.start()
    thread.join()
    if "refused" in outcome and isolate is True:
        raise FcnError(f"cluster-local: cannot create a private network namespace for the "
                       f"tasks ({outcome['refused']}); run as root or use isolate='auto'")
    if "refused" in outcome:
        log(f"[cluster-local] WARNING: no private network namespace ({outcome['refused']}; "
            "needs CAP_SYS_ADMIN): the tasks' unauthenticated servers listen on EVERY interface "
            "of this machine. Firewall these ports or run as root (docs/DISTRIBUTED.md)")
    elif isolate:
        log("[cluster-local] tasks run in a private network namespace: loopback only")
    if "error" in outcome:
        raise outcome["error"]
    return bool(outcome.get("isolated"))


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
           log=print, command=None, env=None, isolate="auto"):
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
      isolate: run the tasks in a private, loopback-only network namespace:
        "auto" (when the kernel allows, else a warning), True (or refuse), False.

    Returns:
      LaunchResult: ``exit_code`` (0 when every worker exited with 0; the first
      failing worker's status; 130 when interrupted; 124 on time-out),
      ``returncodes`` and ``pids`` by task name, ``cluster``, ``seconds`` and
      ``reason`` (None, or why the run was stopped early), ``isolated``
      (whether the tasks ran in a private network namespace).
    """
    cluster = local_cluster(workers, ps, host)
    command = command or [sys.executable, "-m", "fcn_tf1.cli", "train"]
    base_env = dict(os.environ if env is None else env)
    base_env["PYTHONUNBUFFERED"] = "1"  # lines must stream as they are printed
    base_env.pop("TF_CONFIG", None)  # the tasks get the cluster as --cluster FILE
    worker_names = [f"worker:{i}" for i in range(workers)]
    ps_names = [f"ps:{i}" for i in range(ps)]
    children = _Children(log, grace_secs)
    start = time.monotonic()
    reason, exit_code, isolated = None, 0, False
    log(f"[cluster-local] {workers} worker(s), {ps} ps: " + json.dumps(cluster))
    spec_dir = tempfile.TemporaryDirectory(prefix="fcn-tf1-cluster-spec-")
    spec = pathlib.Path(spec_dir.name) / "cluster.json"
    spec.write_text(json.dumps({"cluster": cluster}))
    with spec_dir, signals.StopRequest() as interrupt:
        try:
            starts = []
            for name in ps_names + worker_names:
                job, index = name.split(":")
                starts.append((name, list(command) + ["--cluster", str(spec), "--job-name", job,
                                                      "--task-index", index] + list(train_argv),
                               base_env))
            isolated = _start_isolated(children, starts, isolate, log)
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
                        cluster, seconds, reason, isolated)
