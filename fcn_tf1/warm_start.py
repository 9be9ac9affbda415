"""Start a new run from another run's weights: fine-tuning, and FCN's staged training.

API::

    source_checkpoint(path)                 a run directory (its latest checkpoint) or a prefix
    plan(checkpoint, variables, with_optimizer=False)   -> Plan(copied, fresh, skipped); .averaged
    initialise(session, checkpoint, plan)   restores the planned variables in ``session``

FCN's protocol (Long et al.): train FCN-32s, then FCN-16s initialised from it,
then FCN-8s from FCN-16s. Every variable of the new graph that the old
checkpoint holds under the same name with the same shape is copied (weights,
biases, batch-norm scale/offset and moving statistics, the learnable 2x
upsamplings); the new skip score layers start at zero (model.py), so the
finer net starts from the coarser one's predictions. The optimizer's slots and
the global step start fresh unless ``with_optimizer``: the new run has its own
schedule.
"""
import collections
import pathlib

import tensorflow as tf

from fcn_tf1 import averaging, checkpoints
from fcn_tf1.errors import ConfigError, FcnError, reason

tf1 = tf.compat.v1
# Variables that belong to the optimizer or the step count, not to the model
OPTIMIZER_MARKERS = ("/Adam", "/Momentum", "beta1_power", "beta2_power", "global_step")

class Plan(collections.namedtuple("Plan", ["copied", "fresh", "skipped"])):
    """copied: [(name in the checkpoint, variable)]; fresh, skipped: variable names."""

    @property
    def averaged(self):
        """How many of ``copied`` read a moving average instead of their own name."""
        return sum(1 for source, variable in self.copied if source != variable.op.name)


def source_checkpoint(path):
    """The checkpoint prefix ``path`` names: a run directory's latest, or a prefix itself."""
    path = pathlib.Path(path)
    if path.is_dir():
        return checkpoints.find(path)
    return checkpoints.find(path.parent, path)


def is_optimizer_state(name):
    return any(marker in name for marker in OPTIMIZER_MARKERS)


def _source_name(name, shapes):
    """The checkpoint entry variable ``name`` starts from: its moving average when there is one."""
    average = averaging.average_name(name)
    return average if not averaging.is_average(name) and average in shapes else name


def plan(checkpoint, variables, with_optimizer=False):
    """Which of ``variables`` (of the new graph) the checkpoint initialises.

    Returns:
      Plan: ``copied`` [(checkpoint name, variable)], ``fresh`` (names the
      checkpoint does not hold: initialised as a new run would), ``skipped``
      (optimizer slots and the global step, left fresh unless ``with_optimizer``);
      ``averaged``: how many variables of ``copied`` read a moving average.

    Raises:
      ConfigError: nothing matches, or a name matches with another shape (one
        line naming the first such variable and both shapes).
    """
    try:
        shapes = tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as err:
        raise FcnError(f"{checkpoint}: unreadable checkpoint ({reason(err, 200)})") from None
    copied, fresh, skipped, mismatched = [], [], [], []
    for variable in variables:
        name = variable.op.name
        source = _source_name(name, shapes)
        if is_optimizer_state(name) and not with_optimizer:
            skipped.append(name)
        elif source not in shapes:
            fresh.append(name)
        elif list(shapes[source]) != variable.shape.as_list():
            mismatched.append(f"{source} {list(shapes[source])} in the checkpoint, "
                              f"{variable.shape.as_list()} here")
        else:
            copied.append((source, variable))
    if mismatched:
        raise ConfigError(f"--init-from {checkpoint}: {len(mismatched)} variable(s) match by "
                          f"name but not by shape, e.g. {mismatched[0]} (another width, "
                          "backbone or class count?)")
    if not copied:
        raise ConfigError(f"--init-from {checkpoint}: none of this model's variables is in the "
                          "checkpoint (not a checkpoint of this project's FCN?)")
    return Plan(copied, fresh, skipped)


def initialise(session, checkpoint, planned):
    """Restores ``planned.copied`` from ``checkpoint`` (after the global initializer ran).

    A weight and the new run's average of it read the same checkpoint entry, and
    a Saver maps each entry to one variable: the averages are restored by a second Saver.
    """
    for averages in (False, True):
        var_list = {source: variable for source, variable in planned.copied
                    if averaging.is_average(variable.op.name) == averages}
        if var_list:
            checkpoints.restore(tf1.train.Saver(var_list=var_list), session, checkpoint)


def describe(checkpoint, planned):
    """One line for the log: what was copied, what starts fresh, what was left out."""
    fresh = ", ".join(planned.fresh[:6]) + (" ..." if len(planned.fresh) > 6 else "")
    averaged = (f" ({planned.averaged} from the moving averages of its weights)"
                if planned.averaged else "")
    return (f"initialised from {checkpoint}: {len(planned.copied)} variables copied{averaged}, "
            f"{len(planned.fresh)} new ({fresh or 'none'}), {len(planned.skipped)} optimizer "
            "and step variables left fresh")
