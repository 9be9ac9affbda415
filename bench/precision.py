"""float32 against bfloat16 on our training step: oneDNN's auto-mixed-precision graph rewrite.

    python -m bench.precision [--steps 20] [--rounds 3] [--batch-size 8] [--out FILE.json]

TensorFlow's Grappler pass ``auto_mixed_precision_onednn_bfloat16`` (a
RewriterConfig field of the Session's ConfigProto, present in TF 2.12 and
2.21) rewrites a float32 graph to compute convolutions, matmuls and their
gradients in bfloat16 on CPUs with AVX512_BF16 / AMX, keeping variables and
the loss in float32. Here the same training graph (the siftflow-cpu-60min
recipe: compact FCN-8s width 32, whole 256x256 sample images run at half
resolution, batch 8) runs in two Sessions, one per precision, in interleaved
rounds on one host; the report gives img/s per round, the median ratio, how
many ops of the step ran in bfloat16, and the loss of the same batch both ways.
"""
import argparse
import statistics
import sys
import time

import tensorflow as tf

from fcn_tf1 import batches, graph, paths, presets, rundir
from fcn_tf1.parallel import devices
from fcn_tf1.config import PRECISIONS, RunConfig

tf1 = tf.compat.v1


def session_config(precision):
    return devices.apply_precision(tf1.ConfigProto(), precision)


def bf16_ops(session, net, feed):
    """(ops whose output is bfloat16, all ops) in the partition graph the session ran."""
    options = tf1.RunOptions(output_partition_graphs=True)
    metadata = tf1.RunMetadata()
    session.run(net.train_op, feed, options=options, run_metadata=metadata)
    nodes = [node for g in metadata.partition_graphs for node in g.node]
    bf16 = [n for n in nodes if any(attr.type == tf.bfloat16.as_datatype_enum
                                    for key, attr in n.attr.items() if key in ("T", "DstT"))]
    return len(bf16), len(nodes), sorted({n.op for n in bf16})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default=None, help="also write the report as JSON")
    args = parser.parse_args(argv)
    options = presets.options("siftflow-cpu-60min")
    options.update(batch_size=args.batch_size, data=str(paths.DEFAULT_DATA), lr_schedule="poly",
                   max_minutes=0.0)  # poly_time needs the run clock fed: same ops otherwise
    config = RunConfig(**options)
    with batches.BatchStream(config.data, None, config.batch_size, crop_size=None,
                             prefetch=0) as stream:
        feeds = [next(stream) for _ in range(4)]
    with tf.Graph().as_default():
        tf1.set_random_seed(0)
        net = graph.build_training_graph(config)
        init = tf1.global_variables_initializer()
        sessions = {p: tf1.Session(config=session_config(p)) for p in PRECISIONS}
        for session in sessions.values():
            session.run(init)

        def feed(k):
            images, labels = feeds[k % len(feeds)]
            return {net.images: images, net.labels: labels, net.is_training: True}
        same_batch = {p: float(s.run(net.total_loss, feed(0))) for p, s in sessions.items()}
        ops = {p: bf16_ops(s, net, feed(0)) for p, s in sessions.items()}
        rates = {p: [] for p in PRECISIONS}
        for _ in range(args.rounds):
            for precision, session in sessions.items():
                for k in range(2):  # warm-up
                    session.run(net.train_op, feed(k))
                start = time.perf_counter()
                for k in range(args.steps):
                    session.run(net.train_op, feed(k))
                rates[precision].append(args.steps * config.batch_size
                                        / (time.perf_counter() - start))
    report = {
        "tensorflow": tf.__version__, "batch_size": config.batch_size, "steps": args.steps,
        "img_per_s": rates, "median_img_per_s": {p: statistics.median(r)
                                                 for p, r in rates.items()},
        "bf16_over_fp32": statistics.median(rates["bf16"]) / statistics.median(rates["fp32"]),
        "bf16_ops": {p: {"bf16": o[0], "all": o[1], "kinds": o[2]} for p, o in ops.items()},
        "loss_same_batch": same_batch}
    for precision in PRECISIONS:
        print(f"{precision}: " + " ".join(f"{r:.1f}" for r in rates[precision])
              + f" img/s (median {report['median_img_per_s'][precision]:.1f}); "
              f"{ops[precision][0]} of {ops[precision][1]} ops in bfloat16; loss of one batch "
              f"{same_batch[precision]:.4f}")
    print(f"bf16 / fp32 = {report['bf16_over_fp32']:.2f}")
    print("bfloat16 op kinds: " + ", ".join(ops["bf16"][2][:30]))
    if args.out:
        rundir.write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
