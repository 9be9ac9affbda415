"""Open a trained run: rebuild its inference graph from config.json and restore a checkpoint.

Used by ``fcn-tf1 eval``, ``predict`` and ``export``; they never guess the
architecture, they read it from the run.
"""
import contextlib
import pathlib

import tensorflow as tf

from fcn_tf1 import config as config_lib
from fcn_tf1 import graph, h5data, losses
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


def check_test_scales(config, test_scales):
    """Raises ConfigError unless every test-time scale multiple suits the run ``config``."""
    if test_scales is None:
        return
    if not test_scales:
        raise ConfigError("--test-scales: give at least one scale")
    if len(set(test_scales)) != len(test_scales):
        raise ConfigError(f"--test-scales {','.join(map(str, test_scales))}: a scale is repeated")
    low, high = config_lib.MIN_INPUT_SCALE, config_lib.MAX_INPUT_SCALE
    for multiple in test_scales:
        if not low <= config.input_scale * multiple <= high:
            raise ConfigError(
                f"--test-scales {multiple}: the run's input_scale {config.input_scale} times "
                f"{multiple} is outside [{low}, {high}]")


def with_prior_correction(config, prior_correction):
    """``config`` predicting with ``prior_correction`` (tau; None keeps the run's own).

    A run trained without a correction has no stored class priors: they are
    counted from the training split of the run's data file, as a run that
    starts with the correction does.
    """
    if prior_correction is None:
        return config
    try:
        config = config.replace(prior_correction=prior_correction)
    except ConfigError as err:
        raise ConfigError(f"--prior-correction {prior_correction}: {err}") from None
    if config.prior_correction and config.class_priors is None:
        try:
            with h5data.H5Dataset(config.data) as dataset:
                counts = dataset.label_counts(dataset.split(config.val_fraction)[0])
            config = config.replace(class_priors=losses.class_priors(counts))
        except FcnError as err:
            raise type(err)(f"--prior-correction: the run stores no class priors and they "
                             f"cannot be counted in its training data ({err})") from None
    return config


@contextlib.contextmanager
def open_trained(train_dir, checkpoint=None, test_scales=None, test_flip=False,
                 prior_correction=None):
    """Yields ``(config, session, net, checkpoint_path)`` for a trained run.

    ``net`` is an InferenceGraph (``images`` float32 placeholder, ``predictions``,
    ``probabilities``); batch norm uses its moving averages. ``test_scales``
    (multiples of the run's input_scale) and ``test_flip`` average the
    predictions over test-time views (graph.build_inference_graph);
    ``prior_correction`` (tau, or None for the run's own) corrects them toward
    balanced accuracy (with_prior_correction).
    """
    config = with_prior_correction(config_lib.load(train_dir), prior_correction)
    check_test_scales(config, test_scales)
    checkpoint = find_checkpoint(train_dir, checkpoint)
    with tf.Graph().as_default():
        net = graph.build_inference_graph(config, test_scales, test_flip)
        with tf1.Session() as session:
            restore_model(session, checkpoint)
            yield config, session, net, checkpoint
