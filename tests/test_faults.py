"""Fault injection, fast cases: kill the trainer, stop it, poison it, starve its disk, crowd it.

The long campaigns (10 kills at random moments, repeated signals, longer fuzzing)
are ``python -m tests.support.faults``; both use the harness in tests/support/.
Every trainer here is the real run_train.py (or train.train in-process) with a
tiny model on the embedded SIFT Flow sample. Integration tier: real processes.
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from fcn_tf1 import checkpoints, cli, prepare_data, rundir, train
from fcn_tf1.errors import FcnError
from tests.support import fuzz_inputs, harness, scenarios
from tests.support.harness import Trainer, check_checkpoints, tiny_config

pytestmark = pytest.mark.integration


def quiet(*_args, **_kwargs):
    pass


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny run trained to step 4 with checkpoints at steps 2 and 4 (copy it, do not edit)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    train.train(tiny_config(max_steps=4, save_every_steps=2), run, log=quiet)
    return run


def copy_run(finished_run, target):
    shutil.copytree(finished_run, target)
    return target


def mounted_tmpfs(path, **options):
    """harness.tmpfs, or a visible skip where mounting is not permitted."""
    mount = harness.tmpfs(path, **options)
    try:
        mount.__enter__()
    except harness.MountNotPermitted as err:
        pytest.skip(f"needs a tmpfs mount (root with CAP_SYS_ADMIN), not permitted here: {err}")
    return mount


# --- 1. hard kill ------------------------------------------------------------------------


def test_sigkill_mid_save_resumes_from_latest_checkpoint(tmp_path, finished_run):
    """SIGKILL while a checkpoint is being written: nothing unloadable, at most one save
    interval lost, the stale lock and the partial files are taken care of, and the run
    ends at max_steps keeping --max-to-keep checkpoints (its earlier ones included)."""
    run = copy_run(finished_run, tmp_path / "run")  # checkpoints 2 and 4
    result = scenarios.kill_campaign(tmp_path, kills=1, max_steps=10, save_every=2, log=quiet,
                                  moments=("mid-save",), reference=False, train_dir=run)
    killed = result["kills"][0]
    assert killed["status"] == -signal.SIGKILL and killed["restored"] == 4, killed
    assert killed["moment"].startswith("mid-save (") and killed["in_flight"], killed
    assert killed["latest"] >= 4 and killed["lost_steps"] <= 2, killed  # one save interval
    assert killed["lock_left"] and killed["lock_free"] and not killed["refused"]
    assert result["stale_locks"] == 1 and result["stale_locks_taken"] == 1
    final = result["final"]
    assert final["status"] == 0 and final["latest"] == 10 and not final["traceback"], final
    assert final["resumed_from_latest"], final
    assert result["leftovers"] == [], "partial files of the killed trainer were removed"
    assert result["checkpoint_files"] == [f"model.ckpt-{k}.index" for k in (10, 6, 8)]
    assert not result["lock_after"]


def test_killed_trainer_not_yet_reaped_does_not_hold_the_lock(tmp_path):
    """A parent that SIGKILLs its trainer and restarts before wait(): the zombie is dead."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from fcn_tf1 import rundir; rundir.TrainDirLock(sys.argv[1]).acquire();"
        " print('locked', flush=True); time.sleep(60)"), str(tmp_path)], stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FcnError, match="in use by another trainer"):
            rundir.TrainDirLock(tmp_path).acquire()
        os.kill(holder.pid, signal.SIGKILL)
        time.sleep(0.2)  # not reaped: a zombie until wait()
        with rundir.TrainDirLock(tmp_path):
            assert (tmp_path / rundir.LOCK_NAME).read_text().split()[0] == str(os.getpid())
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("content", ["", "garbage\n", "12 \n",
                                     f"{2**22 + 7} {os.uname().nodename}\n"])
def test_unreadable_or_dead_lock_is_taken_over(tmp_path, content):
    (tmp_path / rundir.LOCK_NAME).write_text(content)
    with rundir.TrainDirLock(tmp_path):
        assert (tmp_path / rundir.LOCK_NAME).read_text().split()[0] == str(os.getpid())


# --- 2. graceful stop --------------------------------------------------------------------


def test_ctrl_c_saves_the_current_step_and_stops_there(tmp_path):
    """SIGINT (Ctrl-C) in the middle of a run, in-process: saved at the step it arrived in,
    and not one step more (of 1000 asked for). The process-level case (exit status 0) is
    SIGTERM in test_train.py; faults.py sends both, at random steps and during start-up, to
    real processes."""
    lines = []

    def interrupt_at_step_3(line):
        lines.append(line)
        if line.startswith("step 3/"):
            os.kill(os.getpid(), signal.SIGINT)

    result = train.train(tiny_config(max_steps=1000, save_every_steps=0, log_every_steps=1),
                         tmp_path, log=interrupt_at_step_3)
    assert result["stopped_by"] == "SIGINT" and result["step"] == 3, result["step"]
    assert len(result["losses"]) == 3 and check_checkpoints(tmp_path) == 3
    assert not any(line.startswith("step 4/") for line in lines), lines
    assert not (tmp_path / rundir.LOCK_NAME).exists()


# --- 3. divergence -----------------------------------------------------------------------


def test_nan_batch_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    outcome = scenarios.diverge_in_process(tmp_path, harness.poisoned_batches(4))
    assert outcome["exit_code"] == 3 and "loss is nan" in outcome["error"], outcome
    assert "latest checkpoint (step 4) is the last good one" in outcome["error"]
    assert outcome["latest"] == 4  # loadable and finite: check_checkpoints read every tensor


def test_weights_that_turn_nan_with_a_finite_loss_are_never_saved(tmp_path):
    outcome = scenarios.diverge_in_process(tmp_path, harness.weights_blow_up_after(3))
    assert outcome["exit_code"] == 3, outcome
    assert outcome["latest"] == 2, outcome  # step 3 had NaN weights: not saved
    assert "step 2" in outcome["error"] and "\n" not in outcome["error"]


def test_bad_label_mid_run_is_one_line_naming_the_file(tmp_path, default_data):
    data = tmp_path / "poisoned.h5"
    index = harness.poison_label(default_data, data, at_batch=3)
    outcome = scenarios.diverge_in_process(tmp_path / "run", None, data=data)
    assert outcome["exit_code"] == 2, outcome
    assert f"{data}: labels[{index}]" in outcome["error"] and "has value 40" in outcome["error"]
    assert outcome["latest"] == 3, outcome  # steps 1-3 (batches 0-2) were saved


# --- 4. disk trouble ---------------------------------------------------------------------


def test_read_only_train_dir_is_refused_before_training(tmp_path):
    """chmod does not stop root: a read-only mount does (EROFS for every user)."""
    lines = []
    mount = mounted_tmpfs(tmp_path / "ro", read_only=True)
    try:
        with pytest.raises(FcnError, match="train dir is not writable .Read-only file system"):
            train.train(tiny_config(), tmp_path / "ro" / "run", log=lines.append)
    finally:
        mount.__exit__()
    assert lines == []  # refused before anything else: no config, no graph, no step


def test_existing_run_on_a_disk_turned_read_only_is_refused_and_untouched(tmp_path, finished_run,
                                                                          capsys):
    mount = mounted_tmpfs(tmp_path / "disk", size="16M")
    try:
        run = copy_run(finished_run, tmp_path / "disk" / "run")
        mount.remount("ro")
        before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
        assert cli.main(["train", "--train-dir", str(run), "--max-steps", "6"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"fcn-tf1: error: {run}: train dir is not writable "
                       "(Read-only file system)"], err
        assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
        assert check_checkpoints(run) == 4
    finally:
        mount.__exit__()


def test_disk_filling_during_a_save_keeps_earlier_checkpoints(tmp_path, finished_run):
    """A tmpfs with room for the run and about one more checkpoint fills up. Where mounting is
    not permitted, the same failure comes from RLIMIT_FSIZE (SIGXFSZ ignored: EFBIG)."""
    used = sum(p.stat().st_size for p in finished_run.rglob("*") if p.is_file())
    mount = harness.tmpfs(tmp_path / "disk", size=f"{used // 1024 + 3072}k")
    try:
        mount.__enter__()
        run, limit, reason = tmp_path / "disk" / "run", None, "No space left on device"
    except harness.MountNotPermitted:
        mount, run = None, tmp_path / "run"
        limit, reason = harness.limit_file_size(300_000), "File too large"
    copy_run(finished_run, run)
    try:
        result = scenarios.full_disk_run(run, max_steps=40, preexec_fn=limit)
        assert result["status"] == 2 and not result["traceback"], result
        assert len(result["errors"]) == 1 and reason in result["errors"][0], result["errors"]
        error = result["errors"][0]
        assert error.startswith(f"fcn-tf1: error: {run}/model.ckpt-"), error
        assert result["steps_done"] > 4  # it resumed, trained, and then the disk was full
        failed_step = int(error.split("model.ckpt-")[1].split(":")[0])
        saved_anyway = "checkpoint saved, but not its .meta" in error
        assert saved_anyway or "could not write checkpoint" in error, error
        assert result["latest"] == (failed_step if saved_anyway else failed_step - 2), result
        assert result["leftovers"] == [], result  # the failed write's partial files are gone
        if mount is not None:
            mount.remount("size=64M")  # space freed: the same command resumes and finishes
        resumed = train.train(tiny_config(max_steps=result["latest"] + 2), run, log=quiet,
                              explicit={"max_steps"})
        assert resumed["step"] == result["latest"] + 2 and len(resumed["losses"]) == 2
    finally:
        if mount is not None:
            mount.__exit__()


def test_missing_or_garbled_checkpoint_state_resumes_from_newest_checkpoint(tmp_path,
                                                                            finished_run):
    run = copy_run(finished_run, tmp_path / "run")
    for garbage in (None, "model_checkpoint_path: \"model.ckpt-\x00", "\xff\xfe junk",
                    f'model_checkpoint_path: "{tmp_path}/elsewhere/model.ckpt-4"\n'):
        state = run / "checkpoint"
        state.unlink() if garbage is None else state.write_text(garbage)
        assert checkpoints.latest(run) == str(run / "model.ckpt-4"), garbage
    lines = []
    result = train.train(tiny_config(max_steps=4), run, log=lines.append)
    assert result["step"] == 4 and result["losses"] == [], lines
    assert f"restored {run / 'model.ckpt-4'}" in lines


def test_corrupt_latest_checkpoint_is_one_line(tmp_path, finished_run, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    data = next(run.glob("model.ckpt-4.data-*"))
    blob = bytearray(data.read_bytes())
    blob[100:200] = bytes(100)
    data.write_bytes(bytes(blob))
    assert cli.main(["train", "--train-dir", str(run), "--max-steps", "6"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"fcn-tf1: error: {run / 'model.ckpt-4'}: "), err
    assert "unreadable checkpoint" in err[0]


def test_train_dir_moved_elsewhere_still_resumes(tmp_path, finished_run):
    moved = copy_run(finished_run, tmp_path / "moved")
    assert "/" not in (moved / "checkpoint").read_text()  # relative paths in the state file
    assert checkpoints.latest(moved) == str(moved / "model.ckpt-4")


def test_prepare_removes_the_temporary_file_of_a_killed_prepare(tmp_path):
    root, _ = fuzz_inputs.make_root(tmp_path, count=2)
    out = tmp_path / "out" / "data.h5"
    out.parent.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    killed, running = (out.parent / f".data.h5.{pid}-0a1b2c3d.part" for pid in (dead, os.getpid()))
    killed.write_bytes(b"half an HDF5 file")
    running.write_bytes(b"another prepare, still writing")
    prepare_data.prepare(root, out, workers=1, progress=False)
    assert sorted(p.name for p in out.parent.iterdir()) == [running.name, "data.h5"]


# --- 5. two trainers ---------------------------------------------------------------------


def test_second_trainer_is_refused_and_the_first_finishes(tmp_path, capsys):
    run = tmp_path / "run"
    first = Trainer(run, "--max-steps", "6", "--save-every-steps", "3")
    try:
        first.wait_line(r"^step 1/")
        status = cli.main(["train", "--train-dir", str(run), "--width", "8"])
        err = capsys.readouterr().err.strip().splitlines()
        assert status == 2 and len(err) == 1, err
        assert f"train dir is in use by another trainer (pid {first.proc.pid} on " in err[0]
    finally:
        assert first.wait() == 0, first.err_lines[-3:]
    assert check_checkpoints(run) == 6 and (run / "metrics.json").is_file()
    assert not (run / rundir.LOCK_NAME).exists()


# --- 6. interrupted final validation, a cluster's chief killed ------------------------------


@pytest.mark.parametrize("previous", [True, False])
def test_sigint_during_the_final_validation_keeps_metrics_json(tmp_path, previous):
    """metrics.json stays the previous complete one (or absent): never the cut-short pass."""
    out = scenarios.interrupted_final_validation(tmp_path, previous)
    assert out["stopped_by"] == "SIGINT" and out["step"] == 4 and out["latest"] == 4, out
    assert out["unchanged"], out
    assert out["before_step"] == (2 if previous else None)


@pytest.mark.slow
def test_killed_chief_of_a_cluster_resumes_when_restarted(tmp_path):
    out = scenarios.distributed_kill(tmp_path, "chief", log=lambda *a: None)
    assert out["ok"], out
