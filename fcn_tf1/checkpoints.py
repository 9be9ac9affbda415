"""The one way to find, restore and save a run's checkpoints.

API::

    latest(train_dir)                      newest complete checkpoint prefix, or None
    find(train_dir, checkpoint=None)       the prefix to restore (given, or the latest)
    restore(saver, session, checkpoint)    tf.train.Saver.restore with one-line errors
    restore_model(session, checkpoint, averaged=False)   every global variable of the graph
    repair_state_file(train_dir)           a damaged ``checkpoint`` state file rewritten
    PeriodicSaver(config, session, train_dir, log)   checkpoints every N steps / M seconds
    BestKeeper(config, session, train_dir, log)      the best validated checkpoint, kept apart
    FiniteWeightsGuard()                   the same NaN check for a CheckpointSaverHook
    sync_saved(train_dir, prefix)          fsync a saved checkpoint and the state file

Training, ``eval``, ``predict``, ``export``, the eager forward and the
distributed chief all go through ``latest``/``find``, so a run that training
resumes is never "no checkpoint" for the others. A checkpoint that does not
match the graph is a ``ConfigError``; a damaged one (DataLossError and other
read failures) an ``FcnError`` naming it; both are one line and exit status 2.
"""
import pathlib
import time

import tensorflow as tf

from fcn_tf1 import averaging, rundir
from fcn_tf1.errors import ConfigError, FcnError, TrainingDiverged, reason

tf1 = tf.compat.v1
PREFIX = "model.ckpt"
BEST_DIR = "best"  # TRAIN_DIR/best: the best validated checkpoint (BestKeeper)
BEST_METRICS = "metrics.json"


def latest(train_dir):
    """The newest complete checkpoint prefix of ``train_dir``, or None.

    The one TensorFlow's ``checkpoint`` state file names; when that file is
    missing, unreadable or names files that are gone (a dir moved by a version
    that wrote absolute paths), the highest ``model.ckpt-STEP`` whose index and
    data files exist. TensorFlow renames both into place only when complete.
    """
    found = tf1.train.latest_checkpoint(str(train_dir))
    if found:
        return found
    steps = []
    for index in pathlib.Path(train_dir).glob(f"{PREFIX}-*.index"):
        step = index.name[len(PREFIX) + 1:-len(".index")]
        if step.isdigit() and any(index.parent.glob(f"{PREFIX}-{step}.data-*")):
            steps.append(int(step))
    return str(pathlib.Path(train_dir) / f"{PREFIX}-{max(steps)}") if steps else None


def state_file_agrees(train_dir, checkpoint):
    """False when ``checkpoint`` was found without the help of the ``checkpoint`` state file."""
    return checkpoint == tf1.train.latest_checkpoint(str(train_dir))


def repair_state_file(train_dir):
    """Rewrites a missing or damaged ``checkpoint`` state file to name ``latest(train_dir)``.

    For restorers that read only the state file (MonitoredTrainingSession):
    without it they would start over from step 0 and overwrite the run.
    Returns the latest checkpoint prefix, or None.
    """
    found = latest(train_dir)
    if found and not state_file_agrees(train_dir, found):
        # a relative name, as PeriodicSaver writes it: the run dir can be moved
        tf1.train.update_checkpoint_state(str(train_dir), pathlib.Path(found).name)
    return found


def find(train_dir, checkpoint=None):
    """The checkpoint prefix to restore: the run's latest (``checkpoint`` None or
    "latest"), its best ("best": BestKeeper's), or the prefix ``checkpoint``."""
    if checkpoint == "best":
        found = latest(pathlib.Path(train_dir) / BEST_DIR)
        if found is None:
            raise FcnError(f"{pathlib.Path(train_dir) / BEST_DIR}: no best checkpoint (the run "
                           "has not completed a validation pass yet, or keeps none)")
        return found
    if checkpoint == "latest":
        checkpoint = None
    if checkpoint is not None:
        prefix = str(checkpoint)
        if not pathlib.Path(prefix + ".index").is_file():
            raise FcnError(f"{prefix}: no such checkpoint (expected {prefix}.index)")
        return prefix
    found = latest(train_dir)
    if found is None:
        raise FcnError(f"{train_dir}: no checkpoint in this train dir (train first)")
    return found


class BestKeeper:
    """The checkpoint of the best validation ``config.keep_best`` metric so far.

    Kept in ``TRAIN_DIR/best/`` (its own state file, one checkpoint) beside
    ``metrics.json`` of the pass that chose it, so the latest-N rotation of the
    periodic checkpoints never deletes it; a resumed run knows the best value
    so far from that file. ``find(train_dir, "best")`` returns it.
    """

    def __init__(self, config, session, train_dir, log):
        self.metric = None if config.keep_best == "none" else config.keep_best
        self.directory = pathlib.Path(train_dir) / BEST_DIR
        self.session, self.log = session, log
        self.best = None
        if self.metric is None:
            return
        self.saver = tf1.train.Saver(max_to_keep=1, save_relative_paths=True)
        if self.directory.is_dir():  # what a trainer killed while keeping a best left behind
            rundir.remove_partial_files(self.directory)
        state = tf1.train.get_checkpoint_state(str(self.directory))
        if state is not None:
            self.saver.recover_last_checkpoints(list(state.all_model_checkpoint_paths))
        record = self.directory / BEST_METRICS
        if record.is_file():
            import json
            try:
                saved = json.loads(record.read_text(encoding="utf-8"))
                if saved.get("metric") == self.metric:
                    self.best = float(saved[self.metric])
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
                raise FcnError(f"{record}: unreadable ({reason(err, 200)}); move it away to "
                               "keep the best checkpoint afresh") from None

    def consider(self, step, result):
        """Saves the weights of ``step`` when ``result`` (a complete validation pass) is
        the best so far."""
        value = None if self.metric is None else result.get(self.metric)
        if value is None or (self.best is not None and value <= self.best):
            return
        try:
            self.directory.mkdir(exist_ok=True)
            path = self.saver.save(self.session, str(self.directory / PREFIX), global_step=step,
                                   write_meta_graph=False)
            sync_saved(self.directory, path)
            rundir.write_json(self.directory / BEST_METRICS,
                              dict(result, step=step, metric=self.metric))
        except (tf.errors.OpError, OSError) as err:  # a full disk, ...: the run goes on
            if self.directory.is_dir():
                rundir.remove_partial_files(self.directory)
            self.log(f"warning: {self.directory}: could not keep the best checkpoint of step "
                     f"{step} ({reason(err, 200)})")
            return
        self.best = value
        self.log(f"best {self.metric} so far ({100 * value:.2f} %): saved {path}")


def step_of(checkpoint):
    """The global step in a ``PREFIX-STEP`` checkpoint name."""
    return int(str(checkpoint).rsplit("-", 1)[1])


def _files_exist(checkpoint):
    prefix = pathlib.Path(checkpoint)
    return (pathlib.Path(f"{prefix}.index").is_file()
            and any(prefix.parent.glob(f"{prefix.name}.data-*")))


def restore(saver, session, checkpoint):
    """``saver.restore`` whose failures are one line naming the checkpoint."""
    try:
        saver.restore(session, checkpoint)
    except (tf.errors.NotFoundError, ValueError) as err:
        # Found, then pruned by a running trainer (max_to_keep) before or while it was read:
        # Saver.restore says ValueError when the index is gone, NotFoundError for the data.
        if not _files_exist(checkpoint):
            raise FcnError(f"{checkpoint}: checkpoint files vanished while being restored "
                           "(a running trainer deletes old checkpoints, --max-to-keep); run "
                           "again to use the newest one") from None
        if isinstance(err, ValueError):
            raise FcnError(f"{checkpoint}: unreadable checkpoint ({reason(err, 200)})") from None
        raise ConfigError(f"{checkpoint}: checkpoint does not match config.json "
                          f"({reason(err, 200)})") from None
    except tf.errors.InvalidArgumentError as err:
        raise ConfigError(f"{checkpoint}: checkpoint does not match config.json "
                          f"({reason(err, 200)})") from None
    except tf.errors.OpError as err:  # DataLossError: a damaged file, never silently skipped
        raise FcnError(f"{checkpoint}: unreadable checkpoint ({reason(err, 200)}); "
                       "move its files away to use the one before") from None


def restore_model(session, checkpoint, averaged=False):
    """Restores every global variable of the default graph from ``checkpoint``;
    ``averaged``: the network's weights from their moving averages (averaging.py)."""
    var_list = averaging.restore_map() if averaged else tf1.global_variables()
    restore(tf1.train.Saver(var_list=var_list), session, checkpoint)


class PeriodicSaver:
    """Periodic checkpoints (every N steps and/or every M seconds) that never save NaN weights.

    Paths in the ``checkpoint`` state file are relative (a run dir can be moved),
    and a resumed run takes over the checkpoints the state file lists, so
    ``max_to_keep`` also prunes those of earlier, stopped or killed, processes.
    ``clock`` (a run_clock.RunClock, set once the starting step is known)
    records the training seconds of every save.
    """

    def __init__(self, config, session, train_dir, log):
        self.clock = None
        self.saver = tf1.train.Saver(max_to_keep=config.max_to_keep, save_relative_paths=True)
        state = tf1.train.get_checkpoint_state(str(train_dir))
        if state is not None:
            self.saver.recover_last_checkpoints(list(state.all_model_checkpoint_paths))
        self.weights_finite = weights_finite()
        self.session = session
        self.train_dir = pathlib.Path(train_dir)
        self.prefix = str(self.train_dir / PREFIX)
        self.every_steps = config.save_every_steps
        self.every_secs = config.save_every_secs
        self.last_step = None
        self.last_time = time.monotonic()
        self.log = log

    def maybe_save(self, step):
        due_steps = self.every_steps and step % self.every_steps == 0
        due_time = self.every_secs and time.monotonic() - self.last_time >= self.every_secs
        if due_steps or due_time:
            self.save(step)

    def save(self, step):
        if step == self.last_step:
            return
        if not self.session.run(self.weights_finite):
            raise TrainingDiverged(diverged_message(step, self.last_good()))
        try:
            path = self.saver.save(self.session, self.prefix, global_step=step)
        except (tf.errors.OpError, OSError) as err:  # a full disk, a file size limit, ...
            rundir.remove_partial_files(self.train_dir)  # give back what the failed write took
            why, prefix = reason(err, 200), f"{self.prefix}-{step}"
            newest = latest(self.train_dir)
            if newest and pathlib.Path(newest).name == pathlib.Path(prefix).name:
                # TensorFlow writes the .meta file after it has recorded the checkpoint
                raise FcnError(f"{prefix}: checkpoint saved, but not its .meta graph file "
                               f"({why}); training stopped") from None
            raise FcnError(f"{prefix}: could not write checkpoint ({why}); earlier "
                           "checkpoints are kept") from None
        sync_saved(self.train_dir, path)
        self.last_step = step
        self.last_time = time.monotonic()
        if self.clock is not None:
            self.clock.checkpoint_saved(step)
        self.log(f"saved {path}")

    def last_good(self):
        if self.last_step is None:
            return "no checkpoint was saved yet"
        return f"the latest checkpoint (step {self.last_step}) is the last good one"


def weights_finite():
    """bool scalar: every float global variable (slots included) is finite.

    The loss of a step is computed before its update: an update that overflows
    shows in the weights first, so they are checked before every save.
    """
    return tf.reduce_all(tf.stack([
        tf.reduce_all(tf.math.is_finite(v)) for v in tf1.global_variables()
        if v.dtype.base_dtype.is_floating]))


def diverged_message(step, last_good):
    return (f"weights are NaN/Inf after step {step} (the loss was still finite): training "
            f"stopped without saving; {last_good}. Lower the learning rate or check the data")


class FiniteWeightsGuard(tf1.train.CheckpointSaverListener):
    """PeriodicSaver's NaN check for a ``tf.compat.v1.train.CheckpointSaverHook``.

    ``before_save`` raises TrainingDiverged when a weight is NaN/Inf, so the
    hook never writes such a checkpoint; ``after_save`` fsyncs what it wrote.
    """

    def __init__(self, train_dir):
        self.train_dir = pathlib.Path(train_dir)
        self.last_step = None

    def begin(self):
        self._finite = weights_finite()

    def before_save(self, session, global_step_value):
        if not session.run(self._finite):
            last_good = ("no checkpoint was saved yet" if self.last_step is None else
                         f"the latest checkpoint (step {self.last_step}) is the last good one")
            raise TrainingDiverged(diverged_message(global_step_value, last_good))

    def after_save(self, session, global_step_value):
        self.last_step = global_step_value
        sync_saved(self.train_dir, f"{self.train_dir / PREFIX}-{global_step_value}")


def sync_saved(train_dir, prefix):
    """fsyncs the files of checkpoint ``prefix``, the ``checkpoint`` state file and the dir.

    TensorFlow renames them into place but does not fsync them: after a power
    loss the state file could name a checkpoint whose data never reached the disk.
    """
    prefix = pathlib.Path(prefix)
    for path in [*prefix.parent.glob(f"{prefix.name}.*"), pathlib.Path(train_dir) / "checkpoint"]:
        try:
            rundir.fsync_file(path)
        except OSError:
            pass  # a file system without fsync: nothing more to do
    rundir.fsync_dir(train_dir)
