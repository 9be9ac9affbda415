"""fcn_tf1: per-pixel scene labeling (SIFT Flow, 33 classes) in TF1-style graph code.

Data flows one stage per module::

    files -> HDF5 -> batches -> inference -> loss -> training -> eval / predict / export

    siftflow.py       dataset descriptor, the label contract, reading the released layout
    h5data.py         prepare (files -> HDF5, atomic, parallel) and validated reading
    batches.py        deterministic, resumable, augmented batches; evaluation batches
    layers.py         conv / batch norm / dropout / bilinear upsampling from get_variable + tf.nn
    model.py          inference(images, ...) -> unscaled logits [B, H, W, num_classes]
    vgg16_weights.py  loader for Keras' VGG16 HDF5 weight files
    losses.py         loss(logits, labels, ...) in the 'reshape' and 'reshape_free' variants,
                      void masking, class weights; predictions(), probabilities()
    compare.py        the reference comparison of the two loss variants
    config.py         the run config (dataclass <-> config.json), validated on load
    graph.py          placeholders -> inference -> loss -> optimizer, from a RunConfig
    train.py          the tf.compat.v1.Session loop: Saver, resume, summaries
    train_args.py     the training command-line options -> RunConfig
    rundir.py         train-dir checks, the single-trainer lock, atomic JSON
    signals.py        SIGINT/SIGTERM as a flag checked at safe points
    towers.py         in-graph replication over a machine's devices (averaged gradients)
    cluster.py        cluster spec from TF_CONFIG or --cluster/--job-name/--task-index
    distributed.py    between-graph replicated training on TF's gRPC runtime (ps/worker)
    cluster_local.py  `fcn-tf1 cluster-local`: start, stream and stop a localhost cluster
    trained.py        reopen a trained run (config.json + checkpoint) for eval/predict/export
    evaluate.py       evaluation passes; metrics.py: confusion matrix and the FCN metrics
    predict.py        class-map and overlay PNGs; export.py: SavedModel for TF2 serving
    eager.py          the same forward pass in eager TF2, reading a graph checkpoint
    visualize.py      class palette, coloured overlays; summaries.py: TensorBoard protos
    cli.py            the `fcn-tf1` command and its subcommands

TensorFlow is used only through ``tf.compat.v1`` graph mode: every graph is
built inside an explicit ``tf.Graph().as_default()`` block and run in a
``tf.compat.v1.Session``.
"""

__version__ = "0.1.0"
