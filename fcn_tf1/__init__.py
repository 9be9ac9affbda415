"""fcn_tf1: per-pixel scene labeling (SIFT Flow, CamVid, your own data) in TF1-style graph code.

The public API, for notebooks and scripts (imported on first use, so
``import fcn_tf1`` alone does not load TensorFlow)::

    import fcn_tf1
    logits = fcn_tf1.inference(images, num_classes=33)     # graph mode: [B, H, W, 33]
    loss = fcn_tf1.loss(logits, labels)                      # per pixel, void masked
    config = fcn_tf1.RunConfig(max_steps=100)                # the embedded sample
    result = fcn_tf1.train_run(config, pathlib.Path("runs/nb"))   # the Session loop
    metrics = fcn_tf1.evaluate_run("runs/nb")          # its validation images, FCN metrics
    fcn_tf1.predict_images("runs/nb", "out", ["photo.jpg"])     # class-map PNGs
    fcn_tf1.export_saved_model("runs/nb", "saved_model")        # for TF2 serving
    net = fcn_tf1.EagerFCN.from_run("runs/nb")         # the same forward pass, eager TF2

(``train_run`` rather than ``train``: ``fcn_tf1.train`` is the module.)

Data flows one stage per module::

    files -> HDF5 -> batches -> inference -> loss -> training -> eval / predict / export

    datasets.py       dataset descriptors: classes, void values, label encoding, colours
    layouts.py        where a dataset's files are (SIFT Flow, SegNet/CamVid, VOC, folders)
    siftflow.py       SIFT Flow's label contract and released layout
    decoders.py       safe decoding of image and MATLAB .mat files (one DataError line)
    prepare_data.py   prepare: files -> one HDF5 file (atomic, parallel); prepare_command.py
    h5data.py         the prepared file: validated reading, images at their own sizes
    batches.py        deterministic, resumable, augmented batches; evaluation batches
    layers.py         conv / batch norm / dropout / bilinear upsampling from get_variable + tf.nn
    model.py          inference(images, ...) -> unscaled logits [B, H, W, num_classes]
    vgg16_weights.py  loader for Keras' VGG16 HDF5 weight files
    losses.py         loss(logits, labels, ...) in the 'reshape' and 'reshape_free' variants,
                      void masking, class weights; lovasz_softmax(); predictions(),
                      probabilities()
    compare.py        the reference comparison of the two loss variants
    config.py         the run config (dataclass <-> config.json), validated on load
    presets.py        named training recipes; train_args.py: command line -> RunConfig
    paths.py          where the embedded sample and prepared data files live
    graph.py          the one graph builder: inference, and training on 1..N towers
    run_setup.py      a run before its first step: resume, data split, class statistics
    steps.py          one training step (shared by every trainer): errors, NaN, progress line
    checkpoints.py    the one way to find, restore and save checkpoints (periodic, best)
    averaging.py      --ema-decay: moving averages of the weights, swapped in to validate
    warm_start.py     --init-from: a new run from another run's weights (FCN's 32s->16s->8s)
    train.py          the single-process tf.compat.v1.Session loop around steps.py
    validation.py     validation passes in training: score, report, write metrics/PNGs
    run_clock.py      training minutes across restarts (--max-minutes), progress.json
    learning_curve.py the learning-curve PNG
    rundir.py         train-dir checks, the single-trainer lock, atomic JSON
    signals.py        SIGINT/SIGTERM as a flag checked at safe points
    parallel/         devices (GPU options, towers), TF's gRPC cluster, cluster-local
    load_run.py       reopen a run (config.json + checkpoint) for eval/predict/export
    evaluate.py       evaluation passes; metrics.py: confusion matrix and the FCN metrics
    predict.py        class-map and overlay PNGs; export.py: SavedModel for TF2 serving
    eager.py          the same forward pass in eager TF2, reading a graph checkpoint
    visualize.py      class palette, coloured overlays; summaries.py: TensorBoard protos
    cli.py            the `fcn-tf1` command and its subcommands

TensorFlow is used only through ``tf.compat.v1`` graph mode: every graph is
built inside an explicit ``tf.Graph().as_default()`` block and run in a
``tf.compat.v1.Session``.
"""
import importlib

__version__ = "0.1.0"

# name -> (module, attribute): the public API, loaded when first used
_PUBLIC = {
    "inference": ("fcn_tf1.model", "inference"),
    "loss": ("fcn_tf1.losses", "loss"),
    "predictions": ("fcn_tf1.losses", "predictions"),
    "RunConfig": ("fcn_tf1.config", "RunConfig"),
    "train_run": ("fcn_tf1.train", "train"),
    "evaluate_run": ("fcn_tf1.evaluate", "run_eval"),
    "predict_images": ("fcn_tf1.predict", "predict"),
    "export_saved_model": ("fcn_tf1.export", "export"),
    "EagerFCN": ("fcn_tf1.eager", "EagerFCN"),
}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'fcn_tf1' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    return getattr(importlib.import_module(module), attribute)


def __dir__():
    return sorted(list(globals()) + list(_PUBLIC))
