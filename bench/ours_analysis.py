"""Where our training step stands: its FLOPs, its top ops, and what this machine can reach.

    analysis_step(spec, data, images, labels, threads, inter)  graph, trace and FLOPs per op
    step_flops(spec, data, images, labels, threads, inter)  float_ops of one training step
    top_ops(trainer, images, labels, top)   one timed-graph step with FULL_TRACE, by op type
    PeakKernel(kind, threads, inter)        a 3x3 conv 256->256 or a 4096 matmul; .run(n)
    LossOp(variant, threads, inter, ...)    losses.loss alone on [8,256,256,33], with its gradient

FLOPs come from the graph: the v1 profiler (``tf.compat.v1.profiler.profile``
with ``float_operation()``) counts each op's float_ops from TensorFlow's
registered statistics (2 per multiply-add for Conv2D,
Conv2DBackpropInput/Filter, MatMul, plus elementwise ops), once a traced run
has completed the shapes that the placeholders leave unknown. Ops without
registered statistics (batch norm, ReLU...) count 0, so the total is a lower
bound dominated by the convolutions; the convolution part is cross-checked
against fcn_spec.training_conv_flops.
"""
import collections
import time

import numpy as np
import tensorflow as tf

from fcn_tf1 import losses
from .ours_graph import session_config

tf1 = tf.compat.v1
CONV_OPS = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter")


IDENTITY_LIKE = ("Identity", "Merge", "Switch", "StopGradient", "Snapshot")


def complete_shapes(graph, metadata):
    """Sets every tensor's shape from the traced run, so the flops statistics can be computed.

    The placeholders leave batch and image sizes unknown at build time. An op
    that ran has its output shapes in the trace; an identity-like op pruned or
    lowered at run time (tf.cond's Merge, gradient tuples) takes its input's.
    """
    ran = {}
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            for out in node.output:
                dims = [d.size for d in out.tensor_description.shape.dim]
                ran[(node.node_name, out.slot)] = tf.TensorShape(dims)
    for op in graph.get_operations():  # creation order: inputs before their consumers
        for slot, tensor in enumerate(op.outputs):
            if tensor.shape.is_fully_defined():
                continue
            shape = ran.get((op.name, slot))
            if shape is None and op.type in IDENTITY_LIKE and op.inputs:
                shape = op.inputs[0].shape
            if shape is not None and shape.is_compatible_with(tensor.shape):
                tensor.set_shape(shape)


def profile_float_ops(graph):
    """{node name: float_ops} of every op of ``graph`` with a nonzero count."""
    options = tf1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    root = tf1.profiler.profile(graph, cmd="scope", options=options)
    counts, pending = {}, list(root.children)
    while pending:
        node = pending.pop()
        if node.float_ops:
            counts[node.name] = int(node.float_ops)
        pending.extend(node.children)
    return counts


def traced_run(session, trainer, images, labels):
    """(RunMetadata, wall seconds) of one FULL_TRACE training step in ``session``."""
    options = tf1.RunOptions(trace_level=tf1.RunOptions.FULL_TRACE)
    metadata = tf1.RunMetadata()
    start = time.perf_counter()
    session.run(trainer.fetches, trainer.feed(images, labels), options=options,
                run_metadata=metadata)
    return metadata, time.perf_counter() - start


def analysis_step(spec, data, images, labels, threads, inter_threads):
    """The training graph of ``spec`` built for analysis, after one traced step.

    v1 control flow (Switch/Merge in the graph, whose shapes the trace gives;
    a v2 ``If`` hides its ops in a function) and a session without Grappler's
    op fusion (ours_graph.session_config(fuse_ops=False)), so every op runs
    under its own name and keeps its own statistics, while the other
    rewrites, e.g. pruning the unused input gradient of conv1_1 that
    ``gate_gradients`` builds, act as in the timed step.

    Returns:
        (trainer, metadata, flops): the open ours_graph.GraphTrainer (the
        caller closes it), the RunMetadata of the traced step (every tensor
        of the graph has its shape set from it) and {node name: float_ops}.
    """
    from .ours_graph import GraphTrainer
    tf1.disable_control_flow_v2()
    try:
        trainer = GraphTrainer(spec, data, threads, inter_threads, fuse_ops=False)
    finally:
        tf1.enable_control_flow_v2()
    try:
        metadata, _ = traced_run(trainer.session, trainer, images, labels)
        complete_shapes(trainer.graph, metadata)
        return trainer, metadata, profile_float_ops(trainer.graph)
    except BaseException:
        trainer.close()
        raise


def step_flops(spec, data, images, labels, threads, inter_threads):
    """Float operations of one training step of ``spec`` on ``images``, ``labels``.

    The training graph is built again for the count (analysis_step) and run
    once with FULL_TRACE. Only ops that ran in that step count.

    Returns:
        dict: ``total`` (int), ``conv`` (Conv2D* ops only), ``by_type``
        {op type: float_ops}, ``unit`` 'FLOP (multiply-add = 2)'.
    """
    trainer, metadata, flops = analysis_step(spec, data, images, labels, threads, inter_threads)
    try:
        ran = {node.node_name for device in metadata.step_stats.dev_stats
               for node in device.node_stats}
        by_type = collections.Counter()
        for name, count in flops.items():
            if name in ran:
                by_type[trainer.graph.get_operation_by_name(name).type] += count
    finally:
        trainer.close()
    return {"total": int(sum(by_type.values())),
            "conv": int(sum(by_type[t] for t in CONV_OPS)),
            "by_type": dict(by_type.most_common()), "unit": "FLOP (multiply-add = 2)"}


def _op_type(label, fallback):
    # timeline labels read "node_name = OpType(input, ...)"
    return label.split(" = ", 1)[1].split("(", 1)[0] if " = " in label else fallback


def top_ops(trainer, images, labels, top=12):
    """Runs one training step of ``trainer`` with FULL_TRACE and ranks where its time went.

    Args:
        trainer: an ours_graph.GraphTrainer (warmed up): the timed session,
            Grappler's fused ops included.
        images, labels: one batch.
        top: rows kept in the rankings.

    Returns:
        dict: ``traced_step_seconds`` (wall time of the traced step, tracing
        included), ``op_seconds`` (sum of every op's time: ops may overlap),
        ``by_type`` [[op type, seconds, share of op_seconds, count]],
        ``by_node`` [[node, op type, seconds]] (both longest first).
    """
    metadata, wall = traced_run(trainer.session, trainer, images, labels)
    by_type, counts, by_node = collections.Counter(), collections.Counter(), []
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            seconds = node.all_end_rel_micros / 1e6
            op_type = _op_type(node.timeline_label, node.node_name)
            by_type[op_type] += seconds
            counts[op_type] += 1
            by_node.append([node.node_name, op_type, seconds])
    total = sum(by_type.values()) or 1.0
    return {"traced_step_seconds": wall, "op_seconds": total,
            "by_type": [[t, s, s / total, counts[t]] for t, s in by_type.most_common(top)],
            "by_node": sorted(by_node, key=lambda row: -row[2])[:top]}


class _KernelSession:
    """A graph of seeded random variables and one target op, run without fetching its output."""

    def __init__(self, threads, inter_threads, build):
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf1.set_random_seed(0)
            self.target = build()
            init = tf1.global_variables_initializer()
        self.session = tf1.Session(graph=self.graph,
                                   config=session_config(threads, inter_threads))
        self.session.run(init)

    def run(self, repeats):
        start = time.perf_counter()
        for _ in range(repeats):
            self.session.run(self.target)
        return {"seconds": time.perf_counter() - start, "items": repeats}

    def close(self):
        self.session.close()


def _random(name, shape):
    return tf1.get_variable(name, shape, tf.float32, tf1.random_normal_initializer())


class PeakKernel(_KernelSession):
    """What this TensorFlow reaches on a large dense kernel: 'conv' or 'matmul'.

    conv: [4, size, size, 256] * [3, 3, 256, 256], SAME (size 64: 19.3 GFLOP);
    matmul: [size, size] x [size, size] (size 4096: 137.4 GFLOP).
    ``run(n)`` also returns ``flops``.
    """

    DEFAULT_SIZE = {"conv": 64, "matmul": 4096}

    def __init__(self, kind, threads, inter_threads, size=None):
        size = size or self.DEFAULT_SIZE[kind]
        if kind == "conv":
            x_shape, k_shape = (4, size, size, 256), (3, 3, 256, 256)
            self.flops = 2 * 4 * size * size * 9 * 256 * 256

            def build():
                return tf.nn.conv2d(_random("x", x_shape), _random("k", k_shape), 1, "SAME").op
        else:
            self.flops = 2 * size ** 3

            def build():
                return tf.matmul(_random("a", [size, size]), _random("b", [size, size])).op
        super().__init__(threads, inter_threads, build)

    def run(self, repeats):
        result = super().run(repeats)
        result["flops"] = repeats * self.flops
        return result


class LossOp(_KernelSession):
    """``losses.loss`` alone (void masking included) on variable logits, forward and gradient.

    The logits and labels are variables, so nothing is constant-folded; the
    labels are random classes with ``void_fraction`` void pixels.
    """

    def __init__(self, variant, threads, inter_threads, shape=(8, 256, 256, 33),
                 void_label=255, void_fraction=0.1, gradient=True):
        rng = np.random.default_rng(0)
        labels = rng.integers(0, shape[-1], shape[:3])
        labels[rng.random(shape[:3]) < void_fraction] = void_label

        def build():
            logits = _random("logits", shape)
            label_var = tf1.get_variable("labels", initializer=tf.constant(labels, tf.int64),
                                         trainable=False)
            loss = losses.loss(logits, label_var, shape[-1], void_label, variant=variant)
            return tf.gradients(loss, logits)[0].op if gradient else loss.op

        super().__init__(threads, inter_threads, build)
