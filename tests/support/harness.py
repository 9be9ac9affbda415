"""Trainer processes, checkpoint checks and injected faults, for tests/test_faults.py and faults.py.

    Trainer(train_dir, *options)     run_train.py in a subprocess, its output read as it comes
    check_checkpoints(train_dir)     loads every listed checkpoint, every tensor; latest step
    leftovers(train_dir)             files TensorFlow was still writing when a trainer died
    poisoned_batches(k)              in-process: batch k of the data stream is NaN
    weights_blow_up_after(k)         in-process: a kernel turns NaN after step k, loss finite
    tmpfs(path, size, read_only)     a small or read-only disk (MountNotPermitted if refused)
    limit_file_size(n)               preexec_fn: RLIMIT_FSIZE, writes past n bytes fail (EFBIG)
    tiny_config(data, **changes)     the RunConfig of the tiny in-process trainer
    poison_label(source, target, k)  an HDF5 copy with an out-of-range label in batch k

Every trainer is the real ``run_train.py`` with a tiny model (width 4, crop 64,
batch 2) on the embedded sample ``data/siftflow_sample.h5``.
"""
import os
import pathlib
import queue
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
RUN_TRAIN = REPO_ROOT / "run_train.py"
TINY = ["--width", "4", "--crop-size", "64", "--batch-size", "2", "--log-every-steps", "1",
        "--num-prediction-pngs", "1", "--summary-every-steps", "5",
        "--image-summary-every-steps", "0"]
STEP_LINE = re.compile(r"^step (\d+)/")
SAVED_LINE = re.compile(r"^saved (.*model\.ckpt-(\d+))$")
RESTORED_LINE = re.compile(r"^restored (.*model\.ckpt-(\d+))$")
# what TensorFlow (NAME.tempstate<digits>, NAME.tmp<hex>) and rundir.atomic_write
# (.NAME.<random>.tmp) call a file they are still writing
PARTIAL = re.compile(r"tempstate|\.tmp[0-9a-f]{32}$|^\.(config|metrics|progress)\.json\.|\.png\.tmp$"
                     r"|^\..+\.tmp$")


class Trainer:
    """``run_train.py`` in a subprocess, its output read line by line in a thread."""

    def __init__(self, train_dir, *args, cwd=None, preexec_fn=None):
        self.train_dir = pathlib.Path(train_dir)
        self.train_dir.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, str(RUN_TRAIN), *TINY, "--train-dir", str(train_dir), *args],
            cwd=cwd or self.train_dir.parent, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
        self.lines, self.err_lines, self._new = [], [], queue.Queue()
        self._readers = [threading.Thread(target=self._read, args=(pipe, sink), daemon=True)
                         for pipe, sink in ((self.proc.stdout, self.lines),
                                            (self.proc.stderr, self.err_lines))]
        for reader in self._readers:
            reader.start()

    def _read(self, pipe, sink):
        for line in pipe:
            sink.append(line.rstrip("\n"))
            self._new.put(line)
        self._new.put(None)

    def wait_line(self, pattern, timeout=120):
        """Blocks until a stdout line matches ``pattern`` (returns it) or the process ends."""
        matching = lambda: next((l for l in self.lines if re.search(pattern, l)), None)
        found = self._wait_for(matching, timeout)
        if found is False:
            raise TimeoutError(f"no line matching {pattern!r} within {timeout} s")
        return found

    def wait_lines(self, pattern, count, timeout=120):
        """Blocks until ``count`` stdout lines match ``pattern`` (False if the process ends)."""
        enough = lambda: sum(bool(re.search(pattern, l)) for l in self.lines) >= count or None
        found = self._wait_for(enough, timeout)
        if found is False:
            raise TimeoutError(f"fewer than {count} lines matching {pattern!r} in {timeout} s")
        return bool(found)

    def _wait_for(self, check, timeout):
        """``check()`` once it is not None; None when the process ended without it;
        False when ``timeout`` passed (the one wait loop of the two methods above)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = check()
            if found is not None:
                return found
            if self.proc.poll() is not None and not self._readers[0].is_alive():
                return check()
            try:
                self._new.get(timeout=0.05)
            except queue.Empty:
                pass
        return False

    def wait_partial_file(self, timeout=120, poll=0.001):
        """Polls the train dir until TensorFlow is writing a checkpoint file; returns its name."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                names = os.listdir(self.train_dir)
            except FileNotFoundError:
                names = []
            partial = [n for n in names if PARTIAL.search(n)]
            if partial:
                return partial[0]
            time.sleep(poll)
        return None

    def signal(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return time.monotonic()

    def wait(self, timeout=180):
        """Waits for the exit (reaping the process) and for the rest of its output."""
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for reader in self._readers:
                reader.join(timeout=10)
        return self.proc.returncode

    def steps_done(self):
        """The last step the trainer reported as done (0 when none)."""
        steps = [int(m.group(1)) for m in map(STEP_LINE.match, self.lines) if m]
        return max(steps, default=0)

    def restored_step(self):
        found = [int(m.group(2)) for m in map(RESTORED_LINE.match, self.lines) if m]
        return found[0] if found else None

    def error_lines(self):
        return [line for line in self.err_lines if line.startswith("fcn-tf1: ")]

    def has_traceback(self):
        return any(line.startswith("Traceback") for line in self.err_lines)


def checkpoint_step(prefix):
    return int(str(prefix).rsplit("-", 1)[1])


def check_checkpoints(train_dir):
    """Loads every checkpoint the run lists, reading every tensor; returns the latest step.

    Raises AssertionError naming a checkpoint that cannot be loaded or holds a
    non-finite float.
    """
    import numpy as np
    import tensorflow as tf
    state = tf.train.get_checkpoint_state(str(train_dir))
    if state is None:
        return None
    for prefix in list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]:
        prefix = str(pathlib.Path(train_dir) / pathlib.Path(prefix).name)
        try:
            reader = tf.train.load_checkpoint(prefix)
            tensors = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
        except Exception as err:  # the finding itself: report which one and why
            raise AssertionError(f"{prefix}: unloadable checkpoint: {type(err).__name__}: "
                                 f"{str(err).splitlines()[0]}") from None
        for name, value in tensors.items():
            value = np.asarray(value)
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise AssertionError(f"{prefix}: {name} is not finite")
    return checkpoint_step(tf.train.latest_checkpoint(str(train_dir)))


def leftovers(train_dir):
    """Files a trainer was writing when it died (TensorFlow's partial names)."""
    return sorted(n for n in os.listdir(train_dir) if PARTIAL.search(n))


def checkpoint_files(train_dir):
    return sorted(p.name for p in pathlib.Path(train_dir).glob("model.ckpt-*.index"))


# --- divergence --------------------------------------------------------------------------

class poisoned_batches:
    """In-process: batch ``at_batch`` of every BatchStream has images full of ``value``."""

    def __init__(self, at_batch, value=float("nan")):
        self.at_batch, self.value = at_batch, value

    def __enter__(self):
        import numpy as np
        from fcn_tf1 import batches
        self.original = original = batches.BatchStream.batch
        at_batch, value = self.at_batch, self.value

        def batch(stream, batch_index):
            images, labels = original(stream, batch_index)
            if batch_index == at_batch:
                images = np.full_like(images, value)
            return images, labels
        batches.BatchStream.batch = batch
        return self

    def __exit__(self, *exc):
        from fcn_tf1 import batches
        batches.BatchStream.batch = self.original


class weights_blow_up_after:
    """In-process: right after training step ``step`` a kernel becomes NaN, the loss of
    that step still being finite (what an overflowing update does)."""

    def __init__(self, step):
        self.step = step

    def __enter__(self):
        import tensorflow as tf
        from fcn_tf1 import graph
        self.original = original = graph.build_training_graph
        step = self.step

        def build(*args, **kwargs):
            net = original(*args, **kwargs)
            kernel = tf.compat.v1.trainable_variables()[0]
            with tf.control_dependencies([net.train_op]):
                factor = tf.where(tf.equal(net.global_step, step), float("nan"), 1.0)
                blow_up = kernel.assign(kernel * factor)
            return net._replace(train_op=tf.group(net.train_op, blow_up))
        graph.build_training_graph = build
        return self

    def __exit__(self, *exc):
        from fcn_tf1 import graph
        graph.build_training_graph = self.original


def tiny_config(data=None, **changes):
    from fcn_tf1 import config as config_lib
    values = dict(data=str(data or REPO_ROOT / "data" / "siftflow_sample.h5"), width=4,
                  crop_size=64, batch_size=2, max_steps=8, save_every_steps=1,
                  save_every_secs=0, summary_every_steps=0, image_summary_every_steps=0,
                  log_every_steps=0, num_prediction_pngs=0)
    values.update(changes)
    return config_lib.RunConfig(**values)


# --- disk trouble ------------------------------------------------------------------------

class MountNotPermitted(Exception):
    """mount(8) is missing or refused here (not root, no CAP_SYS_ADMIN, a locked container)."""


def _mount(*args):
    try:
        proc = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise MountNotPermitted(f"mount {' '.join(args)}: {err}") from None
    if proc.returncode != 0:
        raise MountNotPermitted(f"mount {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")


class tmpfs:
    """A small tmpfs mounted at ``path`` for the ``with`` block (MountNotPermitted if refused)."""

    def __init__(self, path, size="6M", read_only=False):
        self.path, self.options = pathlib.Path(path), f"size={size}" + (",ro" if read_only else "")

    def __enter__(self):
        self.path.mkdir(parents=True, exist_ok=True)
        _mount("-t", "tmpfs", "-o", self.options, "tmpfs", str(self.path))
        return self

    def remount(self, options):
        _mount("-o", f"remount,{options}", str(self.path))

    def __exit__(self, *exc):
        if subprocess.run(["umount", str(self.path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


def limit_file_size(max_bytes):
    """A preexec_fn: files larger than ``max_bytes`` fail with EFBIG (SIGXFSZ ignored)."""
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return preexec


def poison_label(source, target, at_batch, value=40, **config_changes):
    """Copies the HDF5 ``source`` to ``target`` with label ``value`` (out of range) in the
    first image of training batch ``at_batch``; returns that image's index."""
    import h5py
    from fcn_tf1 import batches, h5data
    shutil.copyfile(source, target)
    config = tiny_config(target, **config_changes)
    with h5data.H5Dataset(target) as dataset:
        train_indices, _ = dataset.split(config.val_fraction)
    with batches.BatchStream(target, train_indices, config.batch_size, seed=config.seed,
                             prefetch=0) as stream:
        index = int(stream.epoch_order(0)[at_batch * config.batch_size])
    with h5py.File(target, "r+") as f:
        label = f["labels"][index]
        label[10, 10] = value
        f["labels"][index] = label
    return index
