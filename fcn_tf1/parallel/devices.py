"""In-graph replication on one machine: which device each tower runs on.

``tower_devices(num_towers)`` picks the devices; ``train.train(..., devices=...)``
and ``graph.build_training_graph(config, devices=devices.names)`` build one
tower per device with shared variables and one averaged update (graph.py
explains the gradient combination).
"""
import collections

import tensorflow as tf

from fcn_tf1.errors import ConfigError

tf1 = tf.compat.v1


class Devices(collections.namedtuple("Devices", ["names", "session_config"])):
    """One device string per tower and the Session ConfigProto that provides them."""

    def describe(self):
        return f" on {len(self.names)} towers ({', '.join(self.names)})"


def tower_devices(num_towers):
    """One device per tower: GPUs when there are enough, else virtual CPU devices.

    Virtual CPU devices (``ConfigProto(device_count={'CPU': n})``) share the same
    cores: a correctness setup (the tests use it), not a speed-up.
    """
    if num_towers < 1:
        raise ConfigError(f"--towers {num_towers}: must be >= 1")
    if len(tf.config.list_physical_devices("GPU")) >= num_towers:
        return Devices([f"/gpu:{i}" for i in range(num_towers)],
                       tf1.ConfigProto(allow_soft_placement=True))
    return Devices([f"/cpu:{i}" for i in range(num_towers)],
                   tf1.ConfigProto(device_count={"CPU": num_towers}, allow_soft_placement=True))
