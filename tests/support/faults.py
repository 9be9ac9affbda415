"""The fault campaign: every fault against the real trainer, then the table of what survived.

    python -m tests.support.faults                        # every case: ~8 minutes on 2 cores
    python -m tests.support.faults --kills 10 --signals 3 --fuzz-seconds 60 --json faults.json

Run from the repository root. Each case runs the real ``run_train.py`` (tiny
model, embedded sample data) in a temporary directory and judges it from the
outside: exit status, the last stderr line, every checkpoint loaded with
``tf.train.load_checkpoint``. It prints the table kept in bench/README.md
("Fault injection") and exits 1 when a fault was not survived. The single
faults are in scenarios.py (tests/test_faults.py runs their fast versions),
the input fuzzing in fuzz.py, run here in child processes.
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

from .harness import (REPO_ROOT, MountNotPermitted, Trainer, limit_file_size, poison_label,
                      poisoned_batches, tiny_config, tmpfs, weights_blow_up_after)
from .scenarios import (distributed_kill, diverge_in_process, full_disk_run, graceful_stop,
                        interrupted_final_validation, kill_campaign, killed_prepare, two_trainers)

# The final weights of a killed-and-resumed run must equal an uninterrupted run's exactly:
# batch k depends only on (seed, k) and dropout on a counter saved in the checkpoint, and
# one process on one machine computes the same floats in the same order.
WEIGHT_TOLERANCE = 0.0


def _in_process_cases(work, log):
    """Divergence, disk, lock and state-file cases run in this process (TensorFlow loaded)."""
    from fcn_tf1 import train
    from fcn_tf1.errors import FcnError
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
        rows.append(_not_run("train dir on a read-only mount (EROFS)", err))
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
    stopped = [interrupted_final_validation(work / f"final-validation-{previous}", previous)
               for previous in (True, False)]
    log(f"  SIGINT in the final validation: {stopped}")
    rows.append(("SIGINT during the final validation pass (with / without an earlier "
                 "metrics.json)", 2, sum(o["stopped_by"] == "SIGINT" and o["unchanged"]
                                         for o in stopped),
                 f"metrics.json kept as it was (step {stopped[0]['before_step']}) / left absent"))
    return rows


def _not_run(fault, why):
    """A row for a case this machine cannot run: never counted as injected or survived."""
    return (fault, "not run", "not run", f"not run ({why})")


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
    """fuzz.py in a child (a crash or a hang must not pass unseen): counts or a row."""
    out = work / "fuzz" / name
    command = [sys.executable, "-m", f"{__package__}.fuzz", "--out", str(out),
               "--json", str(out / "report.json"), "--prepare-trials", "0",
               "--config-cases", "0", "--name-cases", "0", "--readers", "", *extra]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=REPO_ROOT)
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
            if counts.get("skipped"):
                lost += (f"; {counts['skipped']} cases editing a vlen-string heap skipped "
                         "(the known libhdf5 hang)")
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
    same = kills["max_weight_diff"] <= WEIGHT_TOLERANCE
    rows.append((f"SIGKILL at random moments ({caught} of them mid-checkpoint-write)",
                 args.kills, good if finished and same else 0,
                 f"max {kills['max_lost_steps']} steps (interval 2); final weights "
                 f"{'=' if same else '**differ from**'} uninterrupted run's (max diff "
                 f"{kills['max_weight_diff']:g}, tolerance {WEIGHT_TOLERANCE:g}); "
                 f"{len(kills['checkpoint_files'])} checkpoints kept, "
                 f"{len(kills['leftovers'])} partial files left"))
    rows.append(("lock left by a killed trainer: flock free at once, next trainer not refused",
                 kills["stale_locks"], kills["stale_locks_taken"], "-"))
    rng = random.Random(args.seed)
    for sig in (signal.SIGINT, signal.SIGTERM):
        stops = [graceful_stop(work / f"{sig.name}{i}", sig, after_step=rng.randint(1, 8))
                 for i in range(args.signals)]
        log(f"  {sig.name}: {stops}")
        # a run stopped by a signal saves, then exits 128 + its number (130, 143) so that a
        # scheduler requeues it
        good = sum(s["status"] == 128 + sig and s["lost_steps"] == 0 and not s["traceback"]
                   for s in stops)
        rows.append((f"{sig.name} mid-training", len(stops), good,
                     f"0 steps; exit {128 + sig} within "
                     f"{max(s['seconds_to_exit'] for s in stops):.1f} s"))
        # start-up, by a marker rather than a time: the "devices:" line comes before the
        # graph is built, so the signal lands before the first step on a fast or slow host
        early = graceful_stop(work / f"{sig.name}-early", sig, after_secs=rng.uniform(0, 0.3),
                              after_line=r"^devices: ")
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
        rows.append(_not_run("disk full during a checkpoint (6 MB tmpfs), then space freed", err))
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
    rows.append(("SIGKILL of `fcn-tf1 prepare` (48 images, 2 processes)", injected,
                 complete + absent, f"output complete {complete}x, absent {absent}x, never "
                 f"partial; {parts} hidden .part file(s) left"))
    for victim, fault in (("worker", "cluster: SIGKILL of a worker (1 ps + 2 workers), restarted"),
                          ("chief", "cluster: SIGKILL of the chief after a checkpoint, restarted")):
        out = distributed_kill(work / f"cluster-{victim}", victim, log=log)
        rows.append((fault, 1, int(out["ok"]),
                     f"run ended at step {out['latest']}, every task exit 0"
                     + (f"; the restarted chief resumed (ran {out.get('chief_local_steps')} of "
                        f"30 steps, killed at checkpoint {out['latest_at_kill']})" if victim == "chief"
                        else "")))
    rows += _cluster_state_file_row(work, log)
    rows += _fuzz_rows(work, args.fuzz_seconds, args.seed, log)
    return rows, work


def _cluster_state_file_row(work, log):
    """cluster-local twice: the second after the `checkpoint` state file was garbled."""
    from fcn_tf1.parallel import cluster_local
    train_dir = work / "cluster-state" / "run"
    argv = ["--width", "4", "--crop-size", "64", "--batch-size", "2", "--train-dir",
            str(train_dir), "--save-every-steps", "2", "--num-prediction-pngs", "0"]
    lines = []
    first = cluster_local.launch(argv + ["--max-steps", "4"], workers=1, ps=1, grace_secs=20,
                                 timeout_secs=300, log=lines.append)
    kept = {p.name: p.read_bytes() for p in train_dir.glob("model.ckpt-4.*")}
    (train_dir / "checkpoint").write_text("garbage \x00")
    second = cluster_local.launch(argv + ["--max-steps", "6"], workers=1, ps=1, grace_secs=20,
                                  timeout_secs=300, log=lines.append)
    unchanged = bool(kept) and all((train_dir / n).read_bytes() == d for n, d in kept.items())
    done = [line for line in lines if " done: " in line][-1:]
    ok = first.exit_code == 0 and second.exit_code == 0 and unchanged and bool(done) \
        and "global step 6" in done[0] and int(done[0].split(" done: ")[1].split()[0]) < 6
    log(f"  cluster, damaged state file: {done}")
    return [("cluster: `checkpoint` state file garbled, the chief restarted", 1, int(ok),
             "0 steps: resumed from model.ckpt-4 (left unchanged), ended at 6")]


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
    not_run = [r[0] for r in rows if r[1] == "not run"]
    if not_run:
        print(f"not run here: {'; '.join(not_run)}")
    return 0 if all(r[1] == r[2] for r in rows) else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
