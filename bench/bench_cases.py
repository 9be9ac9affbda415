"""The timed cases a worker process hosts: every block of work the benchmark times.

    configure_threads(framework, threads, inter_threads)   first thing in a worker process
    make_case(framework, kind, params, threads, inter)     -> case; case.run(n) -> dict
    analyze(case, threads, inter)                          FLOPs and top ops of an ours train case

Kinds (``params`` are plain JSON values; ``spec`` a BenchSpec dict):

    ours   train       spec, data, precision, feed ('constant' or 'stream'), jitter
    ours   eval        spec, data
    ours   loss_op     variant ('reshape' / 'reshape_free'), shape
    ours   peak        kernel ('conv' / 'matmul'), size (None: the default)
    keras  train       spec, data, precision, xla (bool)
    torch  train       spec, data, precision, channels_last (bool)

``precision`` of a train case is 'fp32' (the default) or 'bf16', each
framework's own mixed precision: ours the spec's RunConfig.precision
(oneDNN's bfloat16 graph rewrite), Keras the mixed_bfloat16 dtype policy,
PyTorch CPU autocast (ours_graph.py, peers_keras.py, peers_torch.py).

``run(n)`` does n units of work (training steps, evaluation batches, kernel
runs) and returns ``{"seconds": wall time, "items": images (or runs), ...}``
(training cases add ``steps``).

Every training case consumes the same numpy batch a real loop would: float32
images [B, H, W, 3] in 0..255 and int64 labels [B, H, W] with void pixels,
the first images of the HDF5 file that contain void (compare.read_void_batch).
A 'stream' feed reads the batches from the file instead, through
fcn_tf1.batches.BatchStream (random flip and scale jitter, prefetch thread),
as train.py does. The stream is opened at the start of each block (at the
next batch index) and closed at its end, so its thread never works while
another case is timed; each block starts with ``PREFETCH`` untimed steps,
so the timed steps see the steady state of a running loop (the thread
preparing the next batches while the step runs).
"""
import itertools
import time

from . import fcn_spec

PREFETCH = 2


class Skip(Exception):
    """The case cannot run here (e.g. torch not installed); the message says why."""


TORCH_MISSING = "torch is not installed (pip install -e '.[bench]'; see docs/BENCHMARKS.md)"


def configure_threads(framework, threads, inter_threads):
    """Sets the process-wide thread pools; ours sets them per Session (ConfigProto) instead."""
    if framework == "keras":
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(int(inter_threads))
    elif framework == "torch":
        try:
            import torch
        except ImportError:
            return  # every torch case reports the skip
        torch.set_num_threads(int(threads))
        torch.set_num_interop_threads(int(inter_threads))


class TrainCase:
    """Timed training steps of any trainer with ``.step(images, labels)``.

    ``open_batches(start)`` returns (an iterator of batches from batch index
    ``start`` on, a close callable or None); it is opened at the start of every
    block and closed at its end, so no producer thread works while another
    case is timed.
    """

    def __init__(self, trainer, open_batches, batch_size, untimed=0):
        self.trainer, self.open_batches, self.batch_size = trainer, open_batches, batch_size
        self.untimed, self.position = untimed, 0

    def run(self, steps):
        source, close = self.open_batches(self.position)
        try:
            for _ in range(self.untimed):
                self.trainer.step(*next(source))
            start = time.perf_counter()
            for _ in range(steps):
                images, labels = next(source)
                self.trainer.step(images, labels)
            seconds = time.perf_counter() - start
        finally:
            if close is not None:
                close()
        self.position += self.untimed + steps
        return {"seconds": seconds, "items": steps * self.batch_size, "steps": steps}

    def first_batch(self):
        source, close = self.open_batches(0)
        try:
            return next(source)
        finally:
            if close is not None:
                close()

    def close(self):
        if hasattr(self.trainer, "close"):
            self.trainer.close()


class EvalCase:
    """Timed evaluation passes of ours_graph.GraphEvaluator."""

    def __init__(self, evaluator):
        self.evaluator = evaluator

    def run(self, num_batches):
        result = self.evaluator.run(num_batches)
        return {"seconds": result["seconds"], "items": result["num_images"],
                "forward_seconds": result["forward_seconds"]}

    def close(self):
        self.evaluator.close()


def _trainer(framework, kind_params, spec, threads, inter_threads):
    """The trainer of a train case; ``spec.precision`` is the case's precision."""
    if framework == "ours":
        from .ours_graph import GraphTrainer
        return GraphTrainer(spec, kind_params["data"], threads, inter_threads)
    if framework == "keras":
        from .peers_keras import KerasTrainer
        return KerasTrainer(spec, kind_params.get("xla", False), spec.precision)
    try:
        from .peers_torch import TorchTrainer
    except ImportError:
        raise Skip(TORCH_MISSING) from None
    return TorchTrainer(spec, kind_params.get("channels_last", True), spec.precision)


def _train_case(framework, params, threads, inter_threads):
    from fcn_tf1 import batches, compare
    # RunConfig checks the precision (fp32 or bf16) for every framework
    spec = fcn_spec.BenchSpec.from_dict(params["spec"]).replace(
        precision=params.get("precision", "fp32"))
    trainer = _trainer(framework, params, spec, threads, inter_threads)
    size = spec.image_size  # SIFT Flow images are 256 x 256: smaller sizes are crops
    if params.get("feed", "constant") == "constant":
        images, labels, _ = compare.read_void_batch(params["data"], spec.batch_size)
        batch = (images[:, :size, :size].copy(), labels[:, :size, :size].copy())
        return TrainCase(trainer, lambda start: (itertools.repeat(batch), None),
                         spec.batch_size)
    jitter = tuple(params["jitter"]) if params.get("jitter") else None

    def open_stream(start):
        stream = batches.BatchStream(params["data"], None, spec.batch_size, seed=spec.seed,
                                     crop_size=size, flip=True, scale_jitter=jitter,
                                     prefetch=PREFETCH, start_batch=start)
        return stream, stream.close

    return TrainCase(trainer, open_stream, spec.batch_size, untimed=PREFETCH)


def make_case(framework, kind, params, threads, inter_threads):
    """A case object (see the module docstring); raises Skip where it cannot run."""
    if kind == "train":
        return _train_case(framework, params, threads, inter_threads)
    if framework != "ours":
        raise ValueError(f"{framework}: only 'train' cases, not {kind!r}")
    if kind == "eval":
        from .ours_graph import GraphEvaluator
        spec = fcn_spec.BenchSpec.from_dict(params["spec"])
        return EvalCase(GraphEvaluator(spec, params["data"], threads, inter_threads))
    from .ours_analysis import LossOp, PeakKernel
    if kind == "loss_op":
        return LossOp(params["variant"], threads, inter_threads, shape=tuple(params["shape"]))
    if kind == "peak":
        return PeakKernel(params["kernel"], threads, inter_threads, params.get("size"))
    raise ValueError(f"unknown case kind {kind!r}")


def analyze(case, threads, inter_threads, top=12):
    """FLOPs and FULL_TRACE top ops of one training step of an ours 'train' case.

    Returns:
        dict: ``flops`` (ours_analysis.step_flops) and ``top_ops``
        (ours_analysis.top_ops of the case's own, timed session).
    """
    from .ours_analysis import step_flops, top_ops
    images, labels = case.first_batch()
    trainer = case.trainer
    return {"top_ops": top_ops(trainer, images, labels, top=top),
            "flops": step_flops(trainer.spec, trainer.data, images, labels, threads,
                                inter_threads)}
