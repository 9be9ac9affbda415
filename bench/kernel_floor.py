"""The kernel floor of our training step: every op it runs, timed alone at its own shapes.

    floor(spec, data, threads, inter_threads, blocks=5) -> dict
    python -m bench.kernel_floor [--preset NAME] [--size 256] [--batch-size 8] [--blocks 5]
                                 [--threads N] [--inter-threads N] [--data FILE.h5]
                                 [--out FILE.json]

The network is the benchmark's default model, or with ``--preset`` the network
of a training preset (its variant, backbone, width and input scale; the
optimizer stays momentum, whose update ops are not timed here anyway).

How it is measured:

1. The training graph of ``spec`` is built as the FLOP count builds it
   (ours_analysis.step_flops: v1 control flow, so every op of a tf.cond is a
   node of the graph; Grappler's remapper off, so every op keeps its own name,
   shapes and statistics) and one traced step runs on the benchmark's batch.
2. Every op that ran in that step is a row (an op that oneDNN's graph pass
   fused into the node that ran in its place counts as having run), but the bookkeeping (constants,
   placeholders, control flow, identities, shape queries) and the ops that
   touch variables through a resource handle (reads, the optimizer's updates,
   the batch-norm moving averages), which are counted apart with their traced
   time. The input values of every row are fetched from that same step.
3. Each distinct row (op type, attributes, input shapes and dtypes) is built
   alone in one graph: its NodeDef imported with its inputs mapped to
   variables that hold the step's real values, so integer arguments (shapes,
   axes, labels) are the real ones and nothing is constant-folded. It runs in
   blocks of k runs (k chosen so a block lasts >= 20 ms) after a warm-up; the
   median block, less the same Session's cost of running a NoOp, divided by k,
   is its time alone. oneDNN rewrites the isolated ops as it rewrites the
   step's, with one exception: oneDNN's MaxPoolGrad needs the workspace its
   forward MaxPool leaves, so alone it falls back to TensorFlow's Eigen
   kernel (about 10x slower). Each row therefore takes the smaller of its
   time alone and its time in the traced step of 1. (FULL_TRACE; an op
   waiting for the intra-op pool there only looks slower).
4. The kernel floor is the sum of the rows' times (a row repeated n times in
   the step counts n times); ``alone_seconds`` is the same sum over the
   times alone. The step time is the median of ``blocks`` timed
   steps of the normal timed Session (ours_graph.GraphTrainer: Grappler's
   fusions on, v2 control flow), in the same process before the floor;
   ``overhead = step / floor`` is what the framework adds around its kernels
   (op dispatch, the executor, memory allocation, the copies of the cond
   branches). It can fall below 1: the step fuses ops the floor times apart,
   and runs independent ops on its inter-op threads at once.
5. Each convolution row (Conv2D and both of its gradients; the transposed
   convolutions are Conv2DBackpropInput) gets its FLOPs from TensorFlow's
   registered statistics (ours_analysis.profile_float_ops on the isolated
   graph, where every shape is static), its GFLOP/s, and that rate as a
   fraction of the peak measured in the same process (ours_analysis.PeakKernel
   'conv': a 3x3 256->256 convolution).

float32 only: the bfloat16 rewrite of an isolated op would add the casts the
step shares between ops.
"""
import argparse
import collections
import statistics
import sys
import time

import numpy as np
import tensorflow as tf

from fcn_tf1 import rundir

from . import fcn_spec
from .ours_analysis import CONV_OPS, PeakKernel, analysis_step, profile_float_ops
from .ours_graph import GraphTrainer, session_config

tf1 = tf.compat.v1
BOOKKEEPING = frozenset((
    "Const", "Placeholder", "PlaceholderWithDefault", "NoOp", "Identity", "IdentityN",
    "Switch", "Merge", "Enter", "Exit", "NextIteration", "LoopCond", "StopGradient", "Snapshot",
    "Shape", "ShapeN", "Size", "Rank", "VarHandleOp", "VariableV2", "_Retval", "_Arg",
    "ControlTrigger"))
BLOCK_SECONDS = 0.02  # a timed block lasts at least this long
MAX_RUNS_PER_BLOCK = 200


def _signature(op):
    """(op type, attributes, input shapes and dtypes): equal signatures are the same kernel."""
    attrs = tuple(sorted((key, op.node_def.attr[key].SerializeToString(deterministic=True))
                         for key in op.node_def.attr if not key.startswith("_")))
    inputs = tuple((t.dtype.name, tuple(t.shape.as_list())) for t in op.inputs)
    return op.type, attrs, inputs


def _fused_away(op, ran):
    """Whether ``op`` ran inside another node: no trace record of its own, but a consumer
    that ran and is not control flow (oneDNN's graph pass fuses e.g. a score layer's
    Conv2D into its BiasAdd on AVX-512 hosts). An op of a tf.cond branch not taken feeds
    only control flow (Merge) or nodes that did not run either."""
    consumers = [c for t in op.outputs for c in t.consumers()]
    return any(c.name in ran and c.type not in BOOKKEEPING for c in consumers)


def _timed_rows(graph, ran):
    """(ops to time, ops left out by touching a resource) among the ops that ran."""
    timed, resource = [], []
    for op in graph.get_operations():
        if op.type in BOOKKEEPING or not (op.name in ran or _fused_away(op, ran)):
            continue
        if any(t.dtype == tf.resource for t in op.inputs) or not op.inputs:
            resource.append(op)
        else:
            timed.append(op)
    return timed, resource


def _input_values(trainer, ops, images, labels):
    """{tensor name: array} of every input of ``ops``, from one step on the same batch.

    v1 tf.cond marks the ops of its branches unfetchable (a branch not taken
    has no values); every op here ran, so the mark is lifted for this graph,
    which serves nothing else afterwards.
    """
    inputs = sorted({t.name: t for op in ops for t in op.inputs}.items())
    trainer.graph._unfetchable_ops.clear()  # pylint: disable=protected-access
    fetched = trainer.session.run([t for _, t in inputs], trainer.feed(images, labels))
    return {name: np.asarray(v) for (name, _), v in zip(inputs, fetched)}


def _isolated_node(op, names):
    """``op``'s NodeDef with its inputs renamed to ``names`` (no control inputs, no _ attrs)."""
    node = tf1.NodeDef()
    node.CopyFrom(op.node_def)
    del node.input[:]
    node.input.extend(names)
    node.device = ""
    for key in [k for k in node.attr if k.startswith("_")]:
        del node.attr[key]
    return node


class _Isolated:
    """One graph holding one copy of every distinct op, each fed by variables of real values."""

    def __init__(self, rows, values, threads, inter_threads):
        self.graph = tf.Graph()
        self.targets, feeds = [], {}
        with self.graph.as_default():
            for k, op in enumerate(rows):
                mapped, names = {}, []
                for i, tensor in enumerate(op.inputs):
                    init = tf1.placeholder(tensor.dtype, values[tensor.name].shape)
                    variable = tf1.Variable(init, trainable=False, name=f"row{k}_in{i}")
                    feeds[init] = values[tensor.name]
                    mapped[f"in{i}:0"] = variable.value()
                    names.append(f"in{i}")
                graph_def = tf1.GraphDef()
                for i, tensor in enumerate(op.inputs):  # stand-ins the input_map replaces
                    graph_def.node.add(name=f"in{i}", op="Placeholder").attr["dtype"].type = \
                        tensor.dtype.as_datatype_enum
                graph_def.node.append(_isolated_node(op, names))
                imported = tf1.import_graph_def(graph_def, input_map=mapped,
                                                return_elements=[op.name], name=f"row{k}")[0]
                for ours, theirs in zip(imported.outputs, op.outputs):  # shapes fed as values
                    if theirs.shape.is_fully_defined():              # (e.g. input_sizes)
                        ours.set_shape(theirs.shape)
                self.targets.append(imported)
            self.noop = tf.no_op()
            init_op = tf1.global_variables_initializer()
        # every shape is static here (variables of real values): the profiler counts all
        counts = profile_float_ops(self.graph)
        self.flops = [counts.get(target.name, 0) for target in self.targets]
        self.session = tf1.Session(graph=self.graph, config=session_config(threads, inter_threads))
        self.session.run(init_op, feeds)

    def seconds(self, target, blocks):
        """Median seconds of one run of ``target`` (a block of k runs, median over blocks)."""
        run = self.session.run
        run(target)  # warm-up: oneDNN creates its primitive
        start = time.perf_counter()
        run(target)
        once = time.perf_counter() - start
        k = int(min(MAX_RUNS_PER_BLOCK, max(1, BLOCK_SECONDS // max(once, 1e-6))))
        per_run = []
        for _ in range(blocks):
            start = time.perf_counter()
            for _ in range(k):
                run(target)
            per_run.append((time.perf_counter() - start) / k)
        return statistics.median(per_run)

    def close(self):
        self.session.close()


def _step_seconds(spec, data, images, labels, threads, inter_threads, blocks):
    """Median seconds of one step of the normal timed Session (ours_graph.GraphTrainer)."""
    trainer = GraphTrainer(spec, data, threads, inter_threads)
    try:
        for _ in range(2):
            trainer.step(images, labels)
        times = []
        for _ in range(blocks):
            start = time.perf_counter()
            trainer.step(images, labels)
            times.append(time.perf_counter() - start)
    finally:
        trainer.close()
    return statistics.median(times)


def _peak_gflops(threads, inter_threads):
    kernel = PeakKernel("conv", threads, inter_threads)
    try:
        kernel.run(1)
        result = kernel.run(3)
    finally:
        kernel.close()
    return result["flops"] / result["seconds"] / 1e9


def floor(spec, data, threads, inter_threads, blocks=5, log=print):
    """The kernel floor of one training step of ``spec`` (see the module docstring).

    Returns:
        dict: ``step_seconds``, ``floor_seconds``, ``overhead`` (step / floor),
        ``peak_conv_gflops_per_s``, ``by_type`` [[op type, seconds, count]],
        ``alone_seconds`` (the floor from the isolated times only),
        ``rows`` [[op name, type, input shapes, seconds, count, GFLOP, GFLOP/s,
        fraction of peak, seconds alone, seconds in the traced step (null: fused
        away)]] (longest first; FLOP figures null off the convolutions; seconds
        = the smaller of the two), ``resource_ops`` {count, traced_seconds},
        ``bookkeeping_traced_seconds``, ``traced_op_seconds`` (the traced step's
        summed op times), ``distinct_rows``, ``measure_seconds``.
    """
    from fcn_tf1 import compare
    started = time.perf_counter()
    images, labels, _ = compare.read_void_batch(data, spec.batch_size)
    size = spec.image_size
    images, labels = images[:, :size, :size].copy(), labels[:, :size, :size].copy()
    step = _step_seconds(spec, data, images, labels, threads, inter_threads, blocks)
    log(f"  step {step * 1e3:.1f} ms (median of {blocks})")
    peak = _peak_gflops(threads, inter_threads)
    trainer, metadata, _ = analysis_step(spec, data, images, labels, threads, inter_threads)
    try:
        traced = collections.Counter()
        for device in metadata.step_stats.dev_stats:
            for node in device.node_stats:
                traced[node.node_name] += node.all_end_rel_micros / 1e6
        timed, resource = _timed_rows(trainer.graph, traced)
        values = _input_values(trainer, timed, images, labels)
    finally:
        trainer.close()
    groups = collections.OrderedDict()
    for op in timed:
        groups.setdefault(_signature(op), []).append(op)
    log(f"  {len(timed)} ops in {len(groups)} distinct kernels; timing each alone")
    isolated = _Isolated([ops[0] for ops in groups.values()], values, threads, inter_threads)
    try:
        noop = isolated.seconds(isolated.noop, blocks)
        rows, by_type = [], collections.defaultdict(lambda: [0.0, 0])
        for target, flops, ops in zip(isolated.targets, isolated.flops, groups.values()):
            alone = max(0.0, isolated.seconds(target, blocks) - noop)
            in_step = [traced[op.name] for op in ops if op.name in traced]
            in_step = statistics.mean(in_step) if in_step else None
            seconds = alone if in_step is None else min(alone, in_step)
            op = ops[0]
            gflop = flops / 1e9 if op.type in CONV_OPS else None
            rate = gflop / seconds if gflop and seconds > 0 else None
            rows.append([op.name, op.type, [list(t.shape.as_list()) for t in op.inputs], seconds,
                         len(ops), gflop, rate, rate / peak if rate else None, alone, in_step])
            by_type[op.type][0] += seconds * len(ops)
            by_type[op.type][1] += len(ops)
    finally:
        isolated.close()
    total = sum(row[3] * row[4] for row in rows)
    bookkeeping = sum(s for name, s in traced.items()
                      if name not in {op.name for op in timed + resource})
    return {"step_seconds": step, "floor_seconds": total, "overhead": step / total,
            "alone_seconds": sum(row[8] * row[4] for row in rows),
            "peak_conv_gflops_per_s": peak, "noop_run_seconds": noop,
            "by_type": sorted([[t, s, n] for t, (s, n) in by_type.items()], key=lambda r: -r[1]),
            "rows": sorted(rows, key=lambda r: -r[3] * r[4]),
            "resource_ops": {"count": len(resource),
                             "traced_seconds": sum(traced[op.name] for op in resource)},
            "bookkeeping_traced_seconds": bookkeeping,
            "traced_op_seconds": sum(traced.values()), "distinct_rows": len(rows),
            "measure_seconds": time.perf_counter() - started}


def format_floor(result, top=12):
    """The floor as text: the totals, the op types, the slowest rows with their GFLOP/s."""
    lines = [f"step {result['step_seconds'] * 1e3:.1f} ms, kernel floor "
             f"{result['floor_seconds'] * 1e3:.1f} ms: overhead {result['overhead']:.3f}; "
             f"peak conv {result['peak_conv_gflops_per_s']:.1f} GFLOP/s",
             "op type: ms per step (count)"]
    lines += [f"  {t}: {s * 1e3:.1f} ({n})" for t, s, n in result["by_type"][:top]]
    lines.append("slowest kernels: ms x count, GFLOP/s (fraction of peak)")
    for name, op_type, shapes, seconds, count, _, rate, fraction, *_ in result["rows"][:top]:
        speed = f", {rate:.1f} GFLOP/s ({fraction:.2f})" if rate else ""
        lines.append(f"  {name} [{op_type} {shapes}]: {seconds * 1e3:.2f} x {count}{speed}")
    return "\n".join(lines)


NETWORK_FIELDS = ("variant", "backbone", "width", "input_scale")


def network_spec(preset, batch_size, size):
    """The BenchSpec of ``preset``'s network (None: the default model) at that batch and size."""
    from fcn_tf1 import presets
    changes = {}
    if preset:
        options = presets.options(preset)
        changes = {key: options[key] for key in NETWORK_FIELDS if key in options}
    return fcn_spec.make_spec(preset or "default", batch_size, size, **changes)


def main(argv=None):
    import os
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default=None,
                        help="time the network of this training preset (default: the default "
                             "model)")
    parser.add_argument("--size", type=int, default=256, help="image size (multiple of 32)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks per kernel / steps")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--inter-threads", type=int, default=None)
    parser.add_argument("--data", default=None, help="HDF5 file (default: the embedded sample)")
    parser.add_argument("--out", default=None, help="also write the result as JSON")
    args = parser.parse_args(argv)
    from fcn_tf1 import paths
    from fcn_tf1.errors import FcnError
    try:
        spec = network_spec(args.preset, args.batch_size, args.size)
        result = floor(spec, args.data or str(paths.DEFAULT_DATA), args.threads,
                       args.inter_threads or args.threads, args.blocks)
    except (FcnError, ValueError) as err:  # a bad preset, data file or size: one line
        print(f"kernel_floor: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(format_floor(result))
    if args.out:
        rundir.write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
