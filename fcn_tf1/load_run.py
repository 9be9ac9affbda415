"""Load a finished (or stopped) run for inference: config.json -> graph -> checkpoint.

API::

    open_trained(train_dir, checkpoint=None, test_scales=None, test_flip=False,
                 prior_correction=None)   -> context of (config, session, net, checkpoint)
    with_prior_correction(config, tau)    the run's config predicting with another tau
    check_test_scales(config, test_scales)

Used by ``fcn-tf1 eval``, ``predict``, ``export`` and the distributed chief's
last validation; they never guess the architecture, they read it from the
run, and find the checkpoint through checkpoints.find.
"""
import contextlib

import tensorflow as tf

from fcn_tf1 import config as config_lib
from fcn_tf1 import checkpoints, graph, h5data, losses
from fcn_tf1.errors import ConfigError, FcnError

tf1 = tf.compat.v1


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
    return with_class_priors(config, "--prior-correction") if config.prior_correction else config


def with_class_priors(config, option):
    """``config`` with its class priors, counted in its training split if it stores none;
    an error names ``option``, what needs them."""
    if config.class_priors is None:
        try:
            with h5data.H5Dataset(config.data) as dataset:
                counts = dataset.label_counts(dataset.split(config.val_fraction)[0])
            config = config.replace(class_priors=losses.class_priors(counts))
        except FcnError as err:
            raise type(err)(f"{option}: the run stores no class priors and they cannot be "
                             f"counted in its training data ({err})") from None
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
    checkpoint = checkpoints.find(train_dir, checkpoint)
    with tf.Graph().as_default():
        net = graph.build_inference_graph(config, test_scales, test_flip)
        with tf1.Session() as session:
            checkpoints.restore_model(session, checkpoint, averaged=config.ema_decay > 0)
            yield config, session, net, checkpoint
