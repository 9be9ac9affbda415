"""Devices on one machine: the Session's GPU options and, with towers, one device per tower.

API::

    session_config(gpu_memory_growth=True)       ConfigProto for a training Session
    apply_precision(config, precision)           bf16: oneDNN's mixed precision rewrite
    tower_devices(num_towers, virtual_cpus=False, variables_on="cpu",
                  gpu_memory_growth=True)        -> Devices (names, session_config, ...)
    describe_visible()                           the devices TensorFlow sees, for the log

The graph code is the same on a CPU and on NVIDIA GPUs (TensorFlow's CUDA
build places every op on /gpu:0 when there is one). With ``--towers N``,
``graph.build_training_graph(config, devices=devices.names)`` builds one tower
per GPU with shared variables and one averaged update, the CIFAR-10 multi-GPU
pattern: the variables live on the CPU by default (``variables_on="cpu"``, as
that code did: every tower reads them over PCIe, no GPU holds them all) or on
/gpu:0 (``"gpu"``: faster with NVLink or two GPUs). Without N GPUs towers are
refused, unless ``virtual_cpus``: N virtual CPU devices
(``ConfigProto(device_count={'CPU': N})``) that share the same cores, a
correctness setup for tests, not a speed-up.
"""
import collections

import tensorflow as tf

from fcn_tf1.errors import ConfigError

tf1 = tf.compat.v1


class Devices(collections.namedtuple(
        "Devices", ["names", "session_config", "variables_device"])):
    """One device string per tower, the Session ConfigProto that provides them, and
    where the shared variables live."""

    def describe(self):
        return (f" on {len(self.names)} towers ({', '.join(self.names)}; variables on "
                f"{self.variables_device})")


def session_config(gpu_memory_growth=True, **fields):
    """A Session ConfigProto; GPU memory is taken as needed (``allow_growth``) unless
    ``gpu_memory_growth`` is False, in which case TensorFlow reserves nearly all of it."""
    config = tf1.ConfigProto(allow_soft_placement=True, **fields)
    config.gpu_options.allow_growth = bool(gpu_memory_growth)
    return config


def apply_precision(config, precision):
    """Sets ``precision`` on a Session ConfigProto: "bf16" turns on Grappler's
    auto_mixed_precision_onednn_bfloat16 rewrite (convolutions, their gradients and batch
    norm in bfloat16 on CPUs with AVX512_BF16 or AMX; variables and the loss stay float32;
    TensorFlow skips the rewrite on CPUs without bfloat16). Returns ``config``."""
    if precision == "bf16":
        from tensorflow.core.protobuf import rewriter_config_pb2
        config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = \
            rewriter_config_pb2.RewriterConfig.ON
    return config


def describe_visible():
    """The physical devices TensorFlow sees, e.g. "CPU, 2 GPU(s): GPU:0, GPU:1"."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU only (no GPU visible to TensorFlow)"
    names = ", ".join(gpu.name.replace("/physical_device:", "") for gpu in gpus)
    return f"CPU and {len(gpus)} GPU(s): {names}"


def tower_devices(num_towers, virtual_cpus=False, variables_on="cpu", gpu_memory_growth=True):
    """One device per tower: the first ``num_towers`` GPUs, or virtual CPU devices when
    ``virtual_cpus`` (see the module docstring); ConfigError otherwise."""
    if num_towers < 1:
        raise ConfigError(f"--towers {num_towers}: must be >= 1")
    if variables_on not in ("cpu", "gpu"):
        raise ConfigError(f"--tower-variables {variables_on}: choose cpu or gpu")
    if virtual_cpus:
        if variables_on == "gpu":
            raise ConfigError("--tower-variables gpu: the towers are virtual CPU devices")
        return Devices([f"/cpu:{i}" for i in range(num_towers)],
                       session_config(gpu_memory_growth, device_count={"CPU": num_towers}),
                       "/cpu:0")
    gpus = len(tf.config.list_physical_devices("GPU"))
    if gpus < num_towers:
        raise ConfigError(f"--towers {num_towers}: TensorFlow sees {gpus} GPU(s) (pass "
                          "--virtual-cpu-towers to split the batch over virtual CPU devices "
                          "instead: a correctness check, not a speed-up)")
    return Devices([f"/gpu:{i}" for i in range(num_towers)], session_config(gpu_memory_growth),
                   "/cpu:0" if variables_on == "cpu" else "/gpu:0")
