"""checkpoints: a checkpoint pruned while it is restored, and fsync after each save."""
import os

import pytest
import tensorflow as tf

from fcn_tf1 import checkpoints
from fcn_tf1.errors import ConfigError, FcnError

tf1 = tf.compat.v1


def _saved_run(train_dir, steps=(1, 2)):
    with tf.Graph().as_default():
        tf1.get_variable("w", initializer=1.0)
        saver = tf1.train.Saver()
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            for step in steps:
                saver.save(session, str(train_dir / checkpoints.PREFIX), global_step=step)


class _PrunedDuringRestore:
    """A Saver whose checkpoint loses its data file after the existence check."""

    def __init__(self, saver, victim):
        self.saver, self.victim = saver, victim

    def restore(self, session, checkpoint):
        from tensorflow.python.checkpoint import checkpoint_management as management
        real_exists = management.checkpoint_exists_internal

        def exists_then_pruned(prefix):
            found = real_exists(prefix)
            self.victim.unlink()
            return found
        management.checkpoint_exists_internal = exists_then_pruned
        try:
            return self.saver.restore(session, checkpoint)
        finally:
            management.checkpoint_exists_internal = real_exists


@pytest.mark.parametrize("moment", ["before", "during"])
def test_a_checkpoint_pruned_while_restoring_says_so(tmp_path, moment):
    """eval found model.ckpt-1, a trainer pruned it (max_to_keep) before or while restoring."""
    _saved_run(tmp_path)
    found = str(tmp_path / "model.ckpt-1")
    with tf.Graph().as_default():
        tf1.get_variable("w", initializer=0.0)
        saver = tf1.train.Saver()
        if moment == "before":
            for path in tmp_path.glob("model.ckpt-1.*"):
                path.unlink()
        else:
            saver = _PrunedDuringRestore(saver, next(tmp_path.glob("model.ckpt-1.data-*")))
        with tf1.Session() as session:
            with pytest.raises(FcnError, match="model.ckpt-1: checkpoint files vanished while "
                                               "being restored") as caught:
                checkpoints.restore(saver, session, found)
    assert not isinstance(caught.value, ConfigError)
    assert "does not match" not in str(caught.value)


def test_a_checkpoint_of_another_graph_still_does_not_match(tmp_path):
    _saved_run(tmp_path)
    with tf.Graph().as_default():
        tf1.get_variable("other", initializer=0.0)
        with tf1.Session() as session:
            with pytest.raises(ConfigError, match="does not match config.json"):
                checkpoints.restore_model(session, str(tmp_path / "model.ckpt-2"))


def test_sync_saved_fsyncs_the_checkpoint_and_the_state_file(tmp_path, monkeypatch):
    _saved_run(tmp_path)
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)
    monkeypatch.setattr("fcn_tf1.rundir.os.fsync", fsync)
    checkpoints.sync_saved(tmp_path, tmp_path / "model.ckpt-2")
    assert {"model.ckpt-2.index", "model.ckpt-2.data-00000-of-00001", "checkpoint",
            tmp_path.name} <= set(synced), synced
