"""Open a trained run: rebuild its inference graph from config.json and restore a checkpoint.

Used by ``fcn-tf1 eval``, ``predict`` and ``export``; they never guess the
architecture, they read it from the run.
"""
import contextlib
import pathlib

import tensorflow as tf

from fcn_tf1 import config as config_lib
from fcn_tf1 import graph
from fcn_tf1.errors import ConfigError, FcnError

tf1 = tf.compat.v1


def find_checkpoint(train_dir, checkpoint=None):
    """The checkpoint prefix to restore: ``checkpoint`` if given, else the run's latest."""
    if checkpoint is not None:
        prefix = str(checkpoint)
        if not pathlib.Path(prefix + ".index").is_file():
            raise FcnError(f"{prefix}: no such checkpoint (expected {prefix}.index)")
        return prefix
    latest = tf1.train.latest_checkpoint(str(train_dir))
    if latest is None:
        raise FcnError(f"{train_dir}: no checkpoint in this train dir (train first)")
    return latest


def restore_model(session, checkpoint):
    """Restores the model's variables (not the optimizer's) from ``checkpoint``."""
    saver = tf1.train.Saver(var_list=tf1.global_variables())
    try:
        saver.restore(session, checkpoint)
    except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as err:
        first_line = str(err.message).strip().splitlines()[0]
        raise ConfigError(f"{checkpoint}: checkpoint does not match config.json "
                          f"({first_line[:200]})") from None


@contextlib.contextmanager
def open_trained(train_dir, checkpoint=None):
    """Yields ``(config, session, net, checkpoint_path)`` for a trained run.

    ``net`` is an InferenceGraph (``images`` float32 placeholder, ``predictions``,
    ``probabilities``); batch norm uses its moving averages.
    """
    config = config_lib.load(train_dir)
    checkpoint = find_checkpoint(train_dir, checkpoint)
    with tf.Graph().as_default():
        net = graph.build_inference_graph(config)
        with tf1.Session() as session:
            restore_model(session, checkpoint)
            yield config, session, net, checkpoint
