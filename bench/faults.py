"""Fault injection: kill the trainer, starve it, stop it, poison it; print what survived.

    python bench/faults.py                                  # every case: ~8 minutes on 2 cores
    python bench/faults.py --kills 10 --signals 3 --fuzz-seconds 60 --json faults.json

Each case runs the real ``run_train.py`` (tiny model, embedded sample data) in a
temporary directory and judges it from the outside: exit status, the last
stderr line, every checkpoint loaded with ``tf.train.load_checkpoint``. It
prints the table kept in bench/README.md ("Fault injection"). The fast
versions are in tests/test_faults.py and tests/test_fuzz.py; the harness is
bench/harness.py, the input fuzzing bench/fuzz.py.
"""
import argparse
import contextlib
import json
import pathlib
import random
import signal
import subprocess
import sys
import tempfile
import time

from harness import (REPO_ROOT, SAVED_LINE, MountNotPermitted, Trainer, check_checkpoints,
                     checkpoint_files, leftovers, limit_file_size, tiny_config, tmpfs)


# --- 1. hard kill ----------------------------------------------------------------------

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


# --- 2. graceful stop ------------------------------------------------------------------

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


# --- 3. divergence --------------------------------------------------------------------

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


# --- 4. disk trouble ------------------------------------------------------------------

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


# --- 5. two trainers -------------------------------------------------------------------

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
    import fuzz
    from fcn_tf1 import h5data
    rng = random.Random(f"{seed}-prepare")
    root, names = fuzz.make_root(workdir, count=48)
    complete = absent = 0
    out = pathlib.Path(workdir) / "out" / "data.h5"
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, "-m", "fcn_tf1.cli", "prepare", "--data-dir",
                                 str(root), "--out", str(out), "--quiet", "--workers", "2"],
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


def _in_process_cases(work, log):
    """Divergence, disk, lock and state-file cases run in this process (TensorFlow loaded)."""
    from fcn_tf1 import train
    from fcn_tf1.errors import FcnError
    from harness import poison_label, poisoned_batches, weights_blow_up_after
    sample = REPO_ROOT / "data" / "siftflow_sample.h5"
    rows = []
    for name, injection, changes, good in (
            ("NaN batch (poisoned stream at step 5)", poisoned_batches(4), {}, 4),
            ("weights NaN after step 3, loss finite", weights_blow_up_after(3), {}, 2),
            ("absurd learning rate (momentum, 1e30)", None,
             dict(optimizer="momentum", learning_rate=1e30, lr_schedule="constant"), None)):
        out = diverge_in_process(work / name.split()[0], injection, **changes)
        ok = out["exit_code"] == 3 and (good is None or out["latest"] == good)
        rows.append((name, 1, int(ok), f"0 steps; stopped at the last good checkpoint "
                     f"(step {out['latest']}), exit {out['exit_code']}"))
        log(f"  {name}: {out}")
    data = work / "poisoned.h5"
    index = poison_label(sample, data, at_batch=3)
    out = diverge_in_process(work / "badlabel", None, data=data)
    ok = out["exit_code"] == 2 and f"labels[{index}]" in out["error"] and out["latest"] == 3
    rows.append(("label 40 in the HDF5 file, reached at step 4", 1, int(ok),
                 f"0 steps (latest {out['latest']}); `{out['error'][12:][-70:]}`"))
    blocker = work / "a_file"
    blocker.write_text("")
    try:
        train.train(tiny_config(), blocker / "run", log=lambda *a: None)
        ok = False
    except FcnError as err:
        ok = "not writable" in str(err)
    rows.append(("train dir under a regular file (ENOTDIR, root-proof)", 1, int(ok), "-"))
    try:
        with tmpfs(work / "ro", read_only=True):
            try:
                train.train(tiny_config(), work / "ro" / "run", log=lambda *a: None)
                ok = False
            except FcnError as err:
                ok = "Read-only file system" in str(err)
        rows.append(("train dir on a read-only mount (EROFS)", 1, int(ok), "-"))
    except MountNotPermitted as err:
        rows.append(("train dir on a read-only mount (EROFS)", 0, 0, f"skipped: {err}"))
    run = work / "state"
    train.train(tiny_config(max_steps=4, save_every_steps=2), run, log=lambda *a: None)
    survived = 0
    for garbage in (None, "garbage \x00", 'model_checkpoint_path: "/elsewhere/model.ckpt-4"'):
        state = run / "checkpoint"
        state.unlink() if garbage is None else state.write_text(garbage)
        survived += train.train(tiny_config(max_steps=4), run, log=lambda *a: None)[
            "losses"] == []
    rows.append(("`checkpoint` state file missing / garbled / absolute elsewhere", 3, survived,
                 "0 steps: resumed from the newest complete checkpoint"))
    return rows


FUZZ_NAMES = {
    "jpeg": "random/mutated JPEG & PNG -> siftflow.read_image",
    "mat": "random/mutated .mat -> siftflow.read_label",
    "hdf5": "random/mutated HDF5 -> h5data.H5Dataset, items, label_counts",
    "batches": "the same HDF5 -> iterate_batches, BatchStream",
    "rgb": "random/mutated JPEG & PNG -> predict.read_rgb",
    "prepare": "one mutated file in a root -> `fcn-tf1 prepare` (output all or none)",
    "config": "odd values / keys / bytes in config.json -> config.load",
    "names": "random input names -> predict.output_stems (inside OUT, distinct)"}


def _fuzz_child(work, name, extra, timeout):
    """bench/fuzz.py in a child (a crash or a hang must not pass unseen): counts or a row."""
    out = work / "fuzz" / name
    command = [sys.executable, str(REPO_ROOT / "bench" / "fuzz.py"), "--out", str(out),
               "--json", str(out / "report.json"), "--prepare-trials", "0",
               "--config-cases", "0", "--name-cases", "0", "--readers", "", *extra]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        status = proc.returncode
    except subprocess.TimeoutExpired:
        status = "timeout"
    if status in (0, 1):
        return json.loads((out / "report.json").read_text()), None
    current = " / ".join(p.read_text().strip() for p in out.glob("*/current"))
    kind = "hang" if status in (3, "timeout") else f"crash (status {status})"
    return None, (f"garbage in: {FUZZ_NAMES.get(name, name)}", "-", "-",
                  f"**{kind}** at {current}")


def _fuzz_rows(work, seconds, seed, log):
    """Each reader fuzzed in its own child for ``seconds / 5``, then prepare, config, names."""
    rows, jobs = [], [(r, ["--readers", r, "--seconds", str(seconds / 5)], 4 * seconds + 120)
                      for r in ("jpeg", "mat", "hdf5", "batches", "rgb")]
    jobs.append(("other", ["--prepare-trials", "100", "--config-cases", "4000",
                           "--name-cases", "20000"], 900))
    for name, extra, timeout in jobs:
        report, failed = _fuzz_child(work, name, extra + ["--seed", str(seed)], timeout)
        if failed:
            log(f"  fuzz {name}: {failed[3]}")
            rows.append(failed)
            continue
        for target, counts in report.items():
            log(f"  fuzz {target}: {counts['cases']} cases, {len(counts['findings'])} findings "
                + "; ".join(counts["findings"][:3]))
            lost = (f"0; {counts['rejected']} refused in one line naming the file"
                    if target != "names" else "0; every name inside OUT, no two outputs alike")
            if "max_seconds" in counts:
                lost += f", slowest case {counts['max_seconds']:.2f} s"
            rows.append((f"garbage in: {FUZZ_NAMES[target]}", counts["cases"],
                         counts["accepted"] + counts["rejected"], lost))
    return rows


def run_all(args, log=print):
    work = pathlib.Path(tempfile.mkdtemp(prefix="fcn-faults-"))
    rows = []
    log(f"hard kills ({args.kills}) in {work}")
    kills = kill_campaign(work / "kill", kills=args.kills, seed=args.seed, log=log)
    caught = sum(r["moment"].startswith("mid-save (") for r in kills["kills"])
    good = sum(r["status"] == -signal.SIGKILL and r["resumed_from_latest"]
               and r["lost_steps"] <= 2 for r in kills["kills"])
    final = kills["final"]
    finished = final["status"] == 0 and final["latest"] == 300 and final["resumed_from_latest"]
    rows.append((f"SIGKILL at random moments ({caught} of them mid-checkpoint-write)",
                 args.kills, good if finished else 0,
                 f"max {kills['max_lost_steps']} steps (interval 2); final weights = "
                 f"uninterrupted run's (max diff {kills['max_weight_diff']:g}); "
                 f"{len(kills['checkpoint_files'])} checkpoints kept, "
                 f"{len(kills['leftovers'])} partial files left"))
    rows.append(("lock left by a killed trainer (stale)", kills["stale_locks"],
                 kills["stale_locks"] if finished else 0, "-"))
    rng = random.Random(args.seed)
    for sig in (signal.SIGINT, signal.SIGTERM):
        stops = [graceful_stop(work / f"{sig.name}{i}", sig, after_step=rng.randint(1, 8))
                 for i in range(args.signals)]
        log(f"  {sig.name}: {stops}")
        good = sum(s["status"] == 0 and s["lost_steps"] == 0 and not s["traceback"]
                   for s in stops)
        rows.append((f"{sig.name} mid-training", len(stops), good,
                     f"0 steps; exit 0 within {max(s['seconds_to_exit'] for s in stops):.1f} s"))
        early = graceful_stop(work / f"{sig.name}-early", sig, after_secs=rng.uniform(0.5, 5))
        log(f"  {sig.name} during start-up: {early}")
        rows.append((f"{sig.name} during start-up (before the first step)", 1,
                     int(not early["traceback"] and early["steps_done"] == 0),
                     f"0; exit {early['status']} in {early['seconds_to_exit']:.1f} s, "
                     f"checkpoint {early['latest']}, {early['errors'] or 'no message'}"))
    rows += _in_process_cases(work, log)
    try:
        with tmpfs(work / "disk", size="6M") as disk:
            full = full_disk_run(work / "disk" / "run")
            disk.remount("size=64M")
            resumed = Trainer(work / "disk" / "run", "--max-steps", "40",
                              "--save-every-steps", "2")
            ok = full["status"] == 2 and len(full["errors"]) == 1 and not full["leftovers"] \
                and resumed.wait() == 0 and resumed.restored_step() == full["latest"]
            log(f"  disk full: {full}")
            rows.append(("disk full during a checkpoint (6 MB tmpfs), then space freed", 1,
                         int(ok), f"{full['steps_done'] - full['latest']} steps (since "
                         f"checkpoint {full['latest']}); `{full['errors'][0][16:][-60:]}`"))
    except MountNotPermitted as err:
        rows.append(("disk full during a checkpoint (tmpfs)", 0, 0, f"skipped: {err}"))
    from fcn_tf1 import train
    limited = work / "fsize"
    train.train(tiny_config(max_steps=2, save_every_steps=2), limited, log=lambda *a: None)
    full = full_disk_run(limited, max_steps=8, preexec_fn=limit_file_size(300_000))
    ok = full["status"] == 2 and len(full["errors"]) == 1 and full["latest"] == 2
    rows.append(("file size limit during a checkpoint (RLIMIT_FSIZE 300 kB)", 1, int(ok),
                 f"{full['steps_done'] - full['latest']} steps; `...{full['errors'][0][-45:]}`"))
    both = two_trainers(work / "two")
    log(f"  two trainers: {both}")
    ok = (both["second_status"] == 2 and not both["second_traceback"] and both["first_busy"]
          and "in use by another trainer" in both["second_errors"][0]
          and both["first_status"] == 0 and both["first_latest"] == 300 and both["metrics"])
    rows.append(("second trainer on a busy train dir", 1, int(ok), "0: refused; the first "
                 "finished normally"))
    injected, complete, absent, parts = killed_prepare(work / "prepare", args.prepare_kills)
    rows.append(("SIGKILL of `fcn-tf1 prepare` (48 images, 2 workers)", injected,
                 complete + absent, f"output complete {complete}x, absent {absent}x, never "
                 f"partial; {parts} hidden .part file(s) left"))
    rows += _fuzz_rows(work, args.fuzz_seconds, args.seed, log)
    return rows, work


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs of one run")
    parser.add_argument("--signals", type=int, default=3, help="SIGINTs and SIGTERMs, each")
    parser.add_argument("--prepare-kills", type=int, default=5)
    parser.add_argument("--fuzz-seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    start = time.monotonic()
    rows, work = run_all(args)
    print("\n| fault | injected | survived | data lost |\n|---|---|---|---|")
    for fault, injected, survived, lost in rows:
        print(f"| {fault} | {injected} | {survived} | {lost} |")
    print(f"\n{time.monotonic() - start:.0f} s; work files in {work}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if all(r[1] == r[2] for r in rows) else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
