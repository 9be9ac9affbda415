"""The train dir's lock (flock) and the one atomic-write helper (unique temp, fsync, umask)."""
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import unittest.mock

import numpy as np
import pytest

from fcn_tf1 import learning_curve, rundir, visualize
from fcn_tf1.errors import FcnError

# --- the lock --------------------------------------------------------------------------

HOLDER = (
    "import sys, time\n"
    "from fcn_tf1 import rundir\n"
    "from fcn_tf1.errors import FcnError\n"
    "go, hold = sys.argv[2], float(sys.argv[3])\n"
    "while not __import__('os').path.exists(go): time.sleep(0.001)\n"
    "try:\n"
    "    lock = rundir.TrainDirLock(sys.argv[1]).acquire()\n"
    "except FcnError as err:\n"
    "    print('refused', err, flush=True); sys.exit(0)\n"
    "print('won', flush=True)\n"
    "time.sleep(hold)\n"
    "lock.release()\n")


def _start_holders(train_dir, count, hold, go):
    return [subprocess.Popen([sys.executable, "-c", HOLDER, str(train_dir), str(go), str(hold)],
                             stdout=subprocess.PIPE, text=True) for _ in range(count)]


@pytest.mark.integration
@pytest.mark.parametrize("left_behind", [None, "dead"])
def test_simultaneous_starts_cannot_both_win(tmp_path, left_behind):
    """Six trainers released at the same instant (on a fresh dir, and on the lock file a
    killed trainer left): exactly one holds the lock, the others are refused."""
    if left_behind:  # the content of a lock whose process is gone: no one holds its flock
        (tmp_path / rundir.LOCK_NAME).write_text(f"{2**22 + 7} {socket.gethostname()}\n")
    go = tmp_path / "go"
    procs = _start_holders(tmp_path, 6, hold=2.0, go=go)
    time.sleep(1.5)  # every child imported and polls for the start
    go.write_text("")
    outputs = [p.communicate(timeout=60)[0].split()[0] for p in procs]
    assert sorted(outputs) == ["refused"] * 5 + ["won"], outputs
    assert not (tmp_path / rundir.LOCK_NAME).exists()  # the winner removed it on release


def test_second_lock_in_one_process_is_refused_and_names_the_holder(tmp_path):
    with rundir.TrainDirLock(tmp_path) as held:
        assert held.held
        with pytest.raises(FcnError, match=rf"in use by another trainer \(pid {os.getpid()} on "
                                           rf"{socket.gethostname()}\)"):
            rundir.TrainDirLock(tmp_path).acquire()
    assert not (tmp_path / rundir.LOCK_NAME).exists()
    with rundir.TrainDirLock(tmp_path):  # free again
        pass


@pytest.mark.integration
def test_killed_holder_frees_the_lock_at_once_whatever_its_file_says(tmp_path):
    """SIGKILL, not reaped yet, and a lock file naming another host: free at once (the
    kernel dropped the flock); while it ran, the refusal named its pid."""
    go = tmp_path / "go"
    go.write_text("")
    holder = _start_holders(tmp_path, 1, hold=60, go=go)[0]
    try:
        assert holder.stdout.readline().strip() == "won"
        with pytest.raises(FcnError, match=rf"\(pid {holder.pid} on {socket.gethostname()}\)"):
            rundir.TrainDirLock(tmp_path).acquire()
        # what the file says is information only: another host's name changes nothing
        (tmp_path / rundir.LOCK_NAME).write_text(f"{holder.pid} some-other-host\n")
        holder.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not _is_zombie(holder.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        with rundir.TrainDirLock(tmp_path):
            assert (tmp_path / rundir.LOCK_NAME).read_text().split()[0] == str(os.getpid())
    finally:
        holder.kill()
        holder.wait()


def _is_zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_lock_on_an_unlinked_inode_is_not_kept(tmp_path, monkeypatch):
    """A trainer that locks the inode its predecessor unlinked on release tries again on the
    new file instead of holding a lock no one else can see."""
    path = tmp_path / rundir.LOCK_NAME
    real_flock = rundir.fcntl.flock
    calls = []

    def flock_after_the_holder_left(fd, operation):
        calls.append(operation)
        if len(calls) == 1:  # between our open and our flock, the holder released
            path.unlink()
            path.write_text("")  # and a new trainer's file took the name
        return real_flock(fd, operation)
    monkeypatch.setattr(rundir.fcntl, "flock", flock_after_the_holder_left)
    with rundir.TrainDirLock(tmp_path):
        assert len(calls) == 2
        assert path.read_text().split()[0] == str(os.getpid())


# --- atomic writes ----------------------------------------------------------------------

def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_users_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        rundir.write_json(tmp_path / "config.json", {"a": 1})
        visualize.save_png(tmp_path / "x.png", np.zeros((4, 4), np.uint8))
    finally:
        os.umask(old)
    assert _mode(tmp_path / "config.json") == 0o666 & ~umask
    assert _mode(tmp_path / "x.png") == 0o666 & ~umask


def test_atomic_write_replaces_a_symlink_instead_of_following_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for name, write in (("metrics.json", lambda p: rundir.write_json(p, {"step": 1})),
                        ("x.png", lambda p: visualize.save_png(p, np.zeros((4, 4), np.uint8))),
                        ("learning_curve.png", lambda p: learning_curve.plot_curve([], p))):
        link = tmp_path / name
        link.symlink_to(victim)
        write(link)
        assert not link.is_symlink() and link.stat().st_size > 0, name
        assert victim.read_text() == "keep me", name


def test_atomic_write_uses_a_fresh_temp_name_and_cleans_up(tmp_path):
    """A file at the old fixed temp name (or a symlink there) is never touched; a failed
    write leaves the earlier file and no temp file."""
    target = tmp_path / "learning_curve.png"
    (tmp_path / "elsewhere").write_text("keep me")
    (tmp_path / "learning_curve.png.tmp").symlink_to(tmp_path / "elsewhere")
    learning_curve.plot_curve([], target)
    assert (tmp_path / "elsewhere").read_text() == "keep me"
    rundir.write_json(tmp_path / "m.json", {"v": 1})

    def half_then_fail(f):
        f.write(b"{half")
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError):
        rundir.atomic_write(tmp_path / "m.json", half_then_fail)
    assert json.loads((tmp_path / "m.json").read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "elsewhere", "learning_curve.png", "learning_curve.png.tmp", "m.json"]
    with pytest.raises(FcnError, match=r"m.json: cannot write \(No space left on device\)"):
        with unittest.mock.patch.object(rundir.os, "replace",
                                        side_effect=OSError(28, "No space left on device")):
            rundir.write_json(tmp_path / "m.json", {"v": 2})
    assert json.loads((tmp_path / "m.json").read_text()) == {"v": 1}


def test_atomic_write_fsyncs_the_file_and_its_directory(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)
    monkeypatch.setattr(rundir.os, "fsync", fsync)
    rundir.write_json(tmp_path / "progress.json", {})
    assert len(synced) == 2 and synced[1] == str(tmp_path), synced
    assert synced[0].startswith(str(tmp_path / ".progress.json.")), synced  # before the rename


def test_partial_files_of_atomic_write_are_recognised(tmp_path):
    for name in (".config.json.k2j3h4.tmp", ".learning_curve.png.a_b9xz.tmp",
                 ".metrics.json.abcdef", "learning_curve.png.tmp", "keep.json", ".lock"):
        (tmp_path / name).write_text("")
    assert rundir.remove_partial_files(tmp_path) == [
        ".config.json.k2j3h4.tmp", ".learning_curve.png.a_b9xz.tmp", ".metrics.json.abcdef",
        "learning_curve.png.tmp"]
