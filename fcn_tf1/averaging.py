"""Weight averaging: an exponential moving average of the network's weights (``ema_decay``).

API::

    averaged_variables(scope='fcn')          the variables that are averaged
    Averager(decay, global_step)             builds the averages; .after(train_op), .swapped(session)
    restore_map(scope='fcn')                 {checkpoint name: variable}, the averages into the model
    average_name(name)                       the checkpoint name of variable ``name``'s average
    is_average(name)                         whether ``name`` names an average

With ``ema_decay`` d > 0 every training step ends with
``average = r * average + (1 - r) * weight`` for every weight and batch-norm
statistic of the network, with r = min(d, (1 + n) / (10 + n)) at global step n
(``tf.compat.v1.train.ExponentialMovingAverage`` with ``num_updates``: the
first steps follow the weights instead of averaging the random start in).
d = 0.999 averages over about the last thousand steps. The averages are
variables of their own (``fcn/conv1_1/weights/ExponentialMovingAverage``),
saved in every checkpoint next to the weights they average and restored on
resume. Validation during training, ``eval``, ``predict`` and ``export`` use
the averaged weights; the final validation pass also scores the raw ones.
"""
import contextlib

import tensorflow as tf

tf1 = tf.compat.v1
BATCH_NORM_STATISTICS = ("/moving_mean", "/moving_variance")
# the default name of tf.compat.v1.train.ExponentialMovingAverage, which names the averages
AVERAGE_SUFFIX = "ExponentialMovingAverage"


def averaged_variables(scope="fcn"):
    """The network's trainable variables and batch-norm statistics under ``scope``."""
    prefix = scope.rstrip("/") + "/"
    chosen = list(tf1.trainable_variables(prefix))
    names = {v.op.name for v in chosen}
    chosen += [v for v in tf1.global_variables(prefix)
               if v.op.name.endswith(BATCH_NORM_STATISTICS) and v.op.name not in names]
    return chosen


def average_name(name):
    """``fcn/conv1_1/weights`` -> the name its average has in a checkpoint."""
    return f"{name}/{AVERAGE_SUFFIX}"


def is_average(name):
    """Whether ``name`` (a variable or checkpoint name) is the name of an average."""
    return name.endswith(f"/{AVERAGE_SUFFIX}")


def restore_map(scope="fcn"):
    """{name in a checkpoint of an averaging run: variable of the default graph}.

    The averaged variables read their averages; every other global variable
    reads itself. A Saver with this var_list loads the averaged model.
    """
    averaged = {v.op.name for v in averaged_variables(scope)}
    return {(average_name(v.op.name) if v.op.name in averaged else v.op.name): v
            for v in tf1.global_variables()}


class Averager:
    """The moving averages of one training graph, and the swap validation uses.

    Build it after the train op (inside the training graph's ``tf.Graph``);
    :meth:`after` returns the train op that also updates the averages.
    """

    def __init__(self, decay, global_step, scope="fcn"):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay!r}")
        self.decay = decay
        self.variables = averaged_variables(scope)
        self._ema = tf1.train.ExponentialMovingAverage(decay, num_updates=global_step)
        self._loads = None

    def after(self, train_op):
        """``train_op``, then the update of every average (one op)."""
        with tf.control_dependencies([train_op]):
            update = self._ema.apply(self.variables)
        averages = [self._ema.average(v) for v in self.variables]
        with tf.name_scope("weight_averaging_load"):
            values = [tf1.placeholder(v.dtype.base_dtype, v.shape) for v in self.variables]
            self._loads = (values, tf.group(*[v.assign(value) for v, value in
                                              zip(self.variables, values)]), averages)
        return tf.group(train_op, update, name="train_op_with_averaging")

    @contextlib.contextmanager
    def swapped(self, session):
        """The network holds the averaged weights inside the block, its own ones again after.

        The raw weights are kept in memory meanwhile: the block must not save
        a checkpoint (the trainer saves outside validation passes).
        """
        values, load, averages = self._loads
        raw = session.run(self.variables)
        session.run(load, dict(zip(values, session.run(averages))))
        try:
            yield
        finally:
            session.run(load, dict(zip(values, raw)))
