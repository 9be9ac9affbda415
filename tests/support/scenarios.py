"""One fault each: kill, stop, poison, starve or crowd a tiny trainer; report what survived.

    kill_campaign(workdir, kills, ...)        SIGKILLs at chosen moments, then a run to the end
    weight_difference(dir_a, dir_b)           largest weight difference of two latest checkpoints
    graceful_stop(train_dir, sig, ...)        SIGINT / SIGTERM after a step or during start-up
    diverge_in_process(train_dir, injection)  train.train under a NaN injection; exit code, latest
    full_disk_run(train_dir, ...)             trains until a checkpoint write fails
    two_trainers(train_dir)                   a second trainer on a busy train dir
    killed_prepare(workdir, kills)            SIGKILLs `fcn-tf1 prepare`: output complete or absent

Each returns a dict (or tuple) of what it observed from outside the process;
tests/test_faults.py asserts on them and faults.py turns them into its table.
"""
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
    latest = check_checkpoints(train_dir) if train_dir.exists() else None
    done = trainer.steps_done()
    lost = max(0, done - (latest or 0))
    row = {"moment": detail, "status": status, "steps_done": done, "latest": latest,
           "lost_steps": lost, "restored": trainer.restored_step(), "stale_lock": stale_lock,
           "in_flight": in_flight, "lock_left": (train_dir / ".lock").exists()}
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
    result = {
        "kills": rows, "max_lost_steps": max(r["lost_steps"] for r in rows) if rows else 0,
        "stale_locks": sum(r["stale_lock"] for r in rows) + final_stale_lock,
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

def graceful_stop(train_dir, sig, after_step=None, after_secs=None):
    """Sends ``sig`` after the ``after_step`` line (or ``after_secs`` s); measures the exit."""
    trainer = Trainer(train_dir, "--max-steps", "100000", "--save-every-steps", "0")
    if after_step is not None:
        trainer.wait_line(rf"^step {after_step}/")
    else:
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
