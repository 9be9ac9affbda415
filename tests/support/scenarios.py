"""One fault each: kill, stop, poison, starve or crowd a tiny trainer; report what survived.

    kill_campaign(workdir, kills, ...)        SIGKILLs at chosen moments, then a run to the end
    weight_difference(dir_a, dir_b)           largest weight difference of two latest checkpoints
    graceful_stop(train_dir, sig, ...)        SIGINT / SIGTERM after a step or during start-up
    diverge_in_process(train_dir, injection)  train.train under a NaN injection; exit code, latest
    full_disk_run(train_dir, ...)             trains until a checkpoint write fails
    two_trainers(train_dir)                   a second trainer on a busy train dir
    killed_prepare(workdir, kills)            SIGKILLs `fcn-tf1 prepare`: output complete or absent
    interrupted_final_validation(train_dir)   SIGINT inside the final validation pass
    distributed_kill(workdir, victim)         SIGKILL a worker or the chief of a cluster, restart it
    lock_is_free(train_dir)                   no process holds the flock of TRAIN_DIR/.lock

Each returns a dict (or tuple) of what it observed from outside the process;
tests/test_faults.py asserts on them and faults.py turns them into its table.
"""
import fcntl
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

from .fuzz_inputs import make_root
from .harness import (REPO_ROOT, SAVED_LINE, Trainer, check_checkpoints, checkpoint_files,
                      leftovers, tiny_config)


# --- hard kill -------------------------------------------------------------------------

KILL_MOMENTS = ("mid-save", "after-saved-line", "random-time", "after-step-line")


def lock_is_free(train_dir):
    """Whether the lock file's flock can be taken now (probed, then given back; the file is
    left as it is). True when there is no lock file."""
    try:
        fd = os.open(pathlib.Path(train_dir) / ".lock", os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _kill_once(train_dir, max_steps, save_every, moment, rng, log):
    stale_lock = (train_dir / ".lock").exists()  # left by the previous, killed trainer
    trainer = Trainer(train_dir, "--max-steps", str(max_steps), "--save-every-steps",
                      str(save_every), "--max-to-keep", "3")
    detail, in_flight = moment, None
    if moment == "mid-save":
        trainer.wait_line(r"^step \d+/", timeout=120)  # past start-up: the next partial file
        for _ in range(3):                              # is a periodic checkpoint being written
            partial = trainer.wait_partial_file()
            in_flight = leftovers(train_dir) if partial else []
            # a short-lived file (the state file's temp) can be gone by the second look:
            # then wait for the next save rather than kill after the write
            if in_flight or partial is None:
                break
        detail = f"mid-save ({partial})" if partial else "mid-save (missed: none seen)"
    elif moment == "after-saved-line":
        trainer.wait_line(r"^saved ")
        time.sleep(rng.uniform(0, 0.03))
    elif moment == "after-step-line":
        trainer.wait_lines(r"^step \d+/", rng.randint(1, 6))  # the k-th step of this process
    else:
        time.sleep(rng.uniform(0.5, 9.0))  # start-up, restore, steps or saves
    if in_flight is None:
        in_flight = leftovers(train_dir) if train_dir.exists() else []
    trainer.signal(signal.SIGKILL)
    status = trainer.wait()
    lock_free = lock_is_free(train_dir)  # the kernel dropped the dead trainer's flock
    latest = check_checkpoints(train_dir) if train_dir.exists() else None
    done = trainer.steps_done()
    lost = max(0, done - (latest or 0))
    row = {"moment": detail, "status": status, "steps_done": done, "latest": latest,
           "lost_steps": lost, "restored": trainer.restored_step(), "stale_lock": stale_lock,
           "in_flight": in_flight, "lock_left": (train_dir / ".lock").exists(),
           "lock_free": lock_free,
           "refused": any("in use by another trainer" in e for e in trainer.error_lines())}
    log(f"  kill {moment:16s} -> status {status}, steps done {done}, latest checkpoint "
        f"{latest}, lost {lost}, writing at kill: {in_flight or '-'}")
    return row


def kill_campaign(workdir, kills=10, seed=0, max_steps=300, save_every=2, log=print,
                  moments=KILL_MOMENTS, reference=True, train_dir=None):
    """SIGKILLs the trainer ``kills`` times at chosen moments, then lets it finish.

    Returns a dict: ``kills`` (rows of _kill_once), ``final`` (status, step,
    restored step), ``max_lost_steps``, ``unloadable`` (always 0 or an
    AssertionError is raised), ``stale_locks``, ``checkpoint_files`` at the end,
    ``leftovers`` (partial files left in the dir) and, with ``reference``,
    ``max_weight_diff`` against an uninterrupted run of the same command.
    ``train_dir`` may hold a run already (default: a new one in ``workdir``).
    """
    rng = random.Random(seed)
    workdir = pathlib.Path(workdir)
    train_dir = pathlib.Path(train_dir or workdir / "killed")
    rows, previous_latest = [], check_checkpoints(train_dir) if train_dir.exists() else None
    for i in range(kills):
        row = _kill_once(train_dir, max_steps, save_every, moments[i % len(moments)], rng, log)
        # restored the checkpoint the previous kill left (or, before any, none; or died first)
        row["resumed_from_latest"] = row["restored"] == previous_latest or (
            row["restored"] is None and row["steps_done"] == 0)
        previous_latest = row["latest"] if row["latest"] is not None else previous_latest
        rows.append(row)
    final_stale_lock = (train_dir / ".lock").exists()
    final = Trainer(train_dir, "--max-steps", str(max_steps), "--save-every-steps",
                    str(save_every), "--max-to-keep", "3")
    status = final.wait()
    final_refused = any("in use by another trainer" in e for e in final.error_lines())
    # a lock left by kill i is taken by trainer i+1 (the final one after the last kill)
    taken = [prev["lock_free"] and not nxt.get("refused")
             for prev, nxt in zip(rows, rows[1:] + [{"refused": final_refused}])
             if nxt.get("stale_lock", final_stale_lock)]
    result = {
        "kills": rows, "max_lost_steps": max(r["lost_steps"] for r in rows) if rows else 0,
        "stale_locks": sum(r["stale_lock"] for r in rows) + final_stale_lock,
        "stale_locks_taken": sum(taken),
        "final": {"status": status, "latest": check_checkpoints(train_dir),
                  "restored": final.restored_step(), "errors": final.error_lines(),
                  "resumed_from_latest": final.restored_step() == previous_latest,
                  "traceback": final.has_traceback()},
        "checkpoint_files": checkpoint_files(train_dir), "leftovers": leftovers(train_dir),
        "lock_after": (train_dir / ".lock").exists(), "unloadable": 0}
    if reference:
        straight_dir = workdir / "straight"
        straight = Trainer(straight_dir, "--max-steps", str(max_steps), "--save-every-steps",
                           str(save_every), "--max-to-keep", "3")
        assert straight.wait() == 0, straight.err_lines[-5:]
        result["max_weight_diff"] = weight_difference(train_dir, straight_dir)
    log(f"  final run: status {status}, latest checkpoint {result['final']['latest']}, "
        f"{len(result['checkpoint_files'])} checkpoints on disk, leftovers {result['leftovers']}")
    return result


def weight_difference(dir_a, dir_b):
    """Largest absolute difference between the latest checkpoints of two runs."""
    import numpy as np
    import tensorflow as tf
    a = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(dir_a)))
    b = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(dir_b)))
    worst = 0.0
    for name in a.get_variable_to_shape_map():
        va, vb = np.asarray(a.get_tensor(name)), np.asarray(b.get_tensor(name))
        if va.dtype.kind in "fi":
            worst = max(worst, float(np.max(np.abs(va.astype(np.float64) - vb))) if va.size else 0)
    return worst


# --- graceful stop ---------------------------------------------------------------------

def graceful_stop(train_dir, sig, after_step=None, after_secs=None, after_line=None):
    """Sends ``sig`` after the ``after_step`` line, or ``after_secs`` s after the line
    matching ``after_line`` (or after the start); measures the exit."""
    trainer = Trainer(train_dir, "--max-steps", "100000", "--save-every-steps", "0")
    if after_step is not None:
        trainer.wait_line(rf"^step {after_step}/")
    else:
        if after_line is not None:
            trainer.wait_line(after_line)
        time.sleep(after_secs)
    sent = trainer.signal(sig)
    status = trainer.wait(timeout=120)
    seconds = time.monotonic() - sent
    latest = check_checkpoints(train_dir) if train_dir.exists() else None
    done = trainer.steps_done()
    stopped = [line for line in trainer.lines if line.startswith("stopped by")]
    return {"signal": signal.Signals(sig).name, "status": status, "seconds_to_exit": seconds,
            "steps_done": done, "latest": latest, "lost_steps": max(0, done - (latest or 0)),
            "stopped_line": stopped[0] if stopped else None, "errors": trainer.error_lines(),
            "traceback": trainer.has_traceback(), "lock_left": (train_dir / ".lock").exists()}


# --- divergence ------------------------------------------------------------------------

def diverge_in_process(train_dir, injection, **changes):
    """Trains under ``injection`` (a context manager or None); returns what happened."""
    import contextlib
    from fcn_tf1 import train
    outcome = {"error": None, "exit_code": 0}
    with injection or contextlib.nullcontext():
        try:
            train.train(tiny_config(**changes), train_dir, log=lambda *a: None)
        except Exception as err:  # the finding: which error, which exit status
            outcome.update(error=f"{type(err).__name__}: {err}",
                           exit_code=getattr(err, "exit_code", 2))
    outcome["latest"] = check_checkpoints(train_dir)  # raises when a checkpoint is not finite
    return outcome


# --- disk trouble ----------------------------------------------------------------------

def full_disk_run(train_dir, max_steps=40, preexec_fn=None):
    """Trains until a checkpoint write fails; returns what the trainer said and left."""
    trainer = Trainer(train_dir, "--max-steps", str(max_steps), "--save-every-steps", "2",
                      "--max-to-keep", "100", preexec_fn=preexec_fn)
    status = trainer.wait()
    saved = [int(m.group(2)) for m in map(SAVED_LINE.match, trainer.lines) if m]
    return {"status": status, "errors": trainer.error_lines(), "traceback": trainer.has_traceback(),
            "saved": saved, "steps_done": trainer.steps_done(),
            "latest": check_checkpoints(train_dir), "leftovers": leftovers(train_dir),
            "checkpoints": checkpoint_files(train_dir)}


# --- two trainers ----------------------------------------------------------------------

def two_trainers(train_dir, max_steps=300):
    """A second trainer (asking for another width, too) on a busy dir; the first must
    finish normally. ``first_busy``: the first still ran when the second gave up."""
    first = Trainer(train_dir, "--max-steps", str(max_steps), "--save-every-steps", "100")
    first.wait_line(r"^step 1/")
    second = Trainer(train_dir, "--max-steps", str(max_steps), "--width", "8")
    second_status = second.wait()
    first_busy = first.proc.poll() is None
    first_status = first.wait()
    return {"second_status": second_status, "second_errors": second.error_lines(),
            "second_traceback": second.has_traceback(), "first_busy": first_busy,
            "first_status": first_status,
            "first_latest": check_checkpoints(train_dir), "first_errors": first.error_lines(),
            "metrics": (train_dir / "metrics.json").is_file(),
            "lock_left": (train_dir / ".lock").exists()}


def killed_prepare(workdir, kills, seed=0):
    """SIGKILLs `fcn-tf1 prepare` of 48 real images at random moments: the output is either
    absent or complete; returns (kills, outputs complete, outputs absent, hidden .part left)."""
    from fcn_tf1 import h5data
    rng = random.Random(f"{seed}-prepare")
    root, names = make_root(workdir, count=48)
    complete = absent = 0
    out = pathlib.Path(workdir) / "out" / "data.h5"
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, "-m", "fcn_tf1.cli", "prepare", "--data-dir",
                                 str(root), "--out", str(out), "--quiet", "--processes", "2"],
                                cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.5, 4.0))
        proc.kill()
        proc.wait()
        if out.exists():
            with h5data.H5Dataset(out) as data:  # DataError here would be the finding
                assert len(data) == len(names) and data.label(len(data) - 1) is not None
            complete += 1
            out.unlink()
        else:
            absent += 1
    parts = [p.name for p in out.parent.glob(".*.part")] if out.parent.exists() else []
    return kills, complete, absent, len(parts)


# --- SIGINT during the final validation pass ---------------------------------------------

def interrupted_final_validation(train_dir, previous=True):
    """In-process: SIGINT arrives inside the final validation pass of a resumed run (or of a
    first run, ``previous=False``). metrics.json must stay the previous complete one (or stay
    absent): the pass writes it only when it was not cut short (validation.final_pass)."""
    from fcn_tf1 import train, validation
    train_dir = pathlib.Path(train_dir)
    before = None
    if previous:
        train.train(tiny_config(max_steps=2, num_prediction_pngs=1), train_dir,
                    log=lambda *a: None)
        before = (train_dir / "metrics.json").read_bytes()
    original = validation.validate

    def validate_then_interrupt(*args, **kwargs):
        outcome = original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # the handler only sets the stop flag
        time.sleep(0.05)
        return outcome
    validation.validate = validate_then_interrupt
    try:
        result = train.train(tiny_config(max_steps=4, num_prediction_pngs=1), train_dir,
                             explicit={"max_steps"}, log=lambda *a: None)
    finally:
        validation.validate = original
    path = train_dir / "metrics.json"
    after = path.read_bytes() if path.exists() else None
    return {"stopped_by": result["stopped_by"], "step": result["step"],
            "unchanged": after == before, "before_step": json.loads(before)["step"]
            if before else None, "latest": check_checkpoints(train_dir)}


# --- distributed: kill a worker or the chief, restart it -----------------------------------

def distributed_kill(workdir, victim="worker", max_steps=30, log=print):
    """A 1 ps + 2 worker cluster (worker 0 is the chief) on 127.0.0.1, each task the real
    ``run_train.py --cluster FILE``; ``victim`` ("worker" = worker 1, "chief") is SIGKILLed
    after its 3rd step (the chief: after a checkpoint) and started again with the same
    command. The run must end at ``max_steps`` with every task's status 0."""
    import tensorflow  # noqa: F401 - loaded now, not in check_checkpoints while the run goes on
    from fcn_tf1.parallel import cluster_local
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    spec = workdir / "cluster.json"
    spec.write_text(json.dumps({"cluster": cluster_local.local_cluster(workers=2, ps=1)}))
    train_dir = workdir / "run"
    options = ("--max-steps", str(max_steps), "--save-every-steps", "2", "--lr-schedule",
               "constant", "--num-prediction-pngs", "0")

    def task(job, index):
        return Trainer(train_dir, "--cluster", str(spec), "--job-name", job, "--task-index",
                       str(index), *options, cwd=workdir)
    ps = task("ps", 0)
    tasks = {"chief": task("worker", 0), "worker": task("worker", 1)}
    outcome = {"victim": victim}
    try:
        target = tasks[victim]
        if victim == "chief":
            target.wait_line(r"^step [3-9]/|^step \d\d+/", timeout=240)
            deadline = time.monotonic() + 120
            while (check_checkpoints(train_dir) or 0) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            target.wait_line(r"^step 3/", timeout=240)
        target.signal(signal.SIGKILL)
        outcome["killed_status"] = target.wait()
        outcome["latest_at_kill"] = check_checkpoints(train_dir)
        time.sleep(1.0)
        tasks[victim] = task("worker", 0 if victim == "chief" else 1)
        outcome["statuses"] = {name: t.wait(timeout=300) for name, t in tasks.items()}
        done = [line for line in tasks["chief"].lines if " done: " in line]
        outcome["chief_done"] = done[-1] if done else None
        outcome["errors"] = [e for t in tasks.values() for e in t.error_lines()
                             if not e.startswith("fcn-tf1: warning:")]
    finally:
        ps.signal(signal.SIGTERM)
        outcome["ps_status"] = ps.wait(timeout=60)
        for t in tasks.values():
            if t.proc.poll() is None:
                t.proc.kill()
                t.wait()
    outcome["latest"] = check_checkpoints(train_dir)
    outcome["ok"] = (outcome["statuses"] == {"chief": 0, "worker": 0}
                     and outcome["latest"] == max_steps and not outcome["errors"]
                     and (outcome["latest_at_kill"] or 0) < max_steps)  # killed mid-run
    if victim == "chief":  # the restarted chief resumed: it ran fewer steps than the run has
        local = int(outcome["chief_done"].split(" done: ")[1].split()[0]) \
            if outcome["chief_done"] else max_steps
        outcome["chief_local_steps"] = local
        outcome["ok"] = outcome["ok"] and local < max_steps
    log(f"  distributed kill {victim}: {outcome}")
    return outcome
