"""Our graph path, as benchmarked: the training step and the evaluation pass of fcn_tf1.

    session_config(threads, inter_threads)   ConfigProto with the benchmark's thread counts
    GraphTrainer(spec, data, threads, ...)   graph.build_training_graph in its own Session,
                                             in spec.precision; .step(images, labels) -> loss
    GraphEvaluator(spec, data, threads, ...) graph.build_inference_graph, randomly initialised;
                                             .run(num_batches) -> evaluate_in_session's dict
    weights_by_layer(session, scope='fcn')   {layer: {variable: array}} (for the peers' checks)

The training step is the one train.py runs: images, labels and is_training=True
fed, the train op run (gradients, momentum update, batch norm and dropout
counter updates). It fetches the train op and the total loss only, as the
peers return their loss (train.py also fetches pixel accuracy and the
learning rate for its log line). Every Session gets the spec's precision as
train.py gives it the run's: ``bf16`` is devices.apply_precision's Grappler
rewrite (auto_mixed_precision_onednn_bfloat16), ``fp32`` leaves the
ConfigProto as it is.
"""
import tensorflow as tf

from fcn_tf1 import batches, evaluate, graph, h5data, siftflow
from fcn_tf1.parallel import devices

tf1 = tf.compat.v1


def session_config(threads, inter_threads, fuse_ops=True):
    """A ConfigProto with ``threads`` intra-op and ``inter_threads`` inter-op threads.

    ``fuse_ops=False`` turns off Grappler's remapper only, which fuses e.g.
    Conv2D + BiasAdd + Relu into one ``_FusedConv2D`` op: every op then runs
    under its own name with its own statistics (what the FLOP count needs;
    never for timing). The other rewrites, e.g. pruning gradients nobody
    uses, stay on as in the timed step.
    """
    config = tf1.ConfigProto(intra_op_parallelism_threads=int(threads),
                             inter_op_parallelism_threads=int(inter_threads))
    if not fuse_ops:
        from tensorflow.core.protobuf import rewriter_config_pb2
        config.graph_options.rewrite_options.remapping = rewriter_config_pb2.RewriterConfig.OFF
    return config


class _GraphSession:
    """A graph built by ``build(config)`` with its variables initialised in its own Session
    (in ``spec.precision``)."""

    def __init__(self, spec, data, threads, inter_threads, build, fuse_ops=True):
        self.spec, self.data = spec, data
        self.config = spec.run_config(data)
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.net = build(self.config)
            self.init_op = tf1.global_variables_initializer()
        self.threads = (threads, inter_threads)
        self.session = tf1.Session(graph=self.graph, config=devices.apply_precision(
            session_config(threads, inter_threads, fuse_ops), spec.precision))
        self.session.run(self.init_op)

    def close(self):
        self.session.close()


class GraphTrainer(_GraphSession):
    """Our training step (graph.build_training_graph) for one BenchSpec."""

    def __init__(self, spec, data, threads, inter_threads, fuse_ops=True):
        super().__init__(spec, data, threads, inter_threads, graph.build_training_graph,
                         fuse_ops)
        self.fetches = {"train": self.net.train_op, "loss": self.net.total_loss}

    def feed(self, images, labels):
        return {self.net.images: images, self.net.labels: labels, self.net.is_training: True}

    def step(self, images, labels):
        """One training step on float32 [B, H, W, 3] and int64 [B, H, W]; returns the loss."""
        return float(self.session.run(self.fetches, self.feed(images, labels))["loss"])


class GraphEvaluator(_GraphSession):
    """Our evaluation pass (evaluate.evaluate_in_session) on the first images of ``data``."""

    def __init__(self, spec, data, threads, inter_threads):
        super().__init__(spec, data, threads, inter_threads, graph.build_inference_graph)
        with h5data.H5Dataset(data) as dataset:
            self.num_images = len(dataset)

    def run(self, num_batches):
        """Evaluates ``num_batches`` batches read from the HDF5 file (as ``fcn-tf1 eval`` does).

        The images are the file's first ones (cycled when the file holds fewer).

        Returns:
            dict: ``seconds`` (whole pass), ``forward_seconds`` (inside session.run),
            ``num_images``.
        """
        size = self.spec.batch_size
        indices = [i % self.num_images for i in range(num_batches * size)]
        stream = batches.iterate_batches(self.data, indices, size)
        result = evaluate.evaluate_in_session(
            self.session, self.net, stream, self.config.num_classes, self.config.void_label,
            list(siftflow.CLASS_NAMES))
        return {k: result[k] for k in ("seconds", "forward_seconds", "num_images")}


def weights_by_layer(session, scope="fcn"):
    """Every variable of the model as ``{layer: {name: numpy array}}`` (e.g. conv1_1/gamma)."""
    variables = [v for v in tf1.global_variables(scope + "/")
                 if v.op.name.count("/") == 2]  # fcn/LAYER/NAME; not fcn/dropout_counter
    values = session.run(variables)
    out = {}
    for variable, value in zip(variables, values):
        _, layer, name = variable.op.name.split("/")
        out.setdefault(layer, {})[name] = value
    return out
