"""fcn_tf1: per-pixel scene labeling (SIFT Flow, 33 classes) in TF1-style graph code.

Data flows one stage per module::

    files -> HDF5 -> batches -> inference -> loss -> training -> eval / predict / export

    siftflow.py   dataset descriptor, the label contract, reading the released layout
    h5data.py     prepare (files -> HDF5, atomic) and streaming, augmented batches
    model.py      inference(images, ...) -> unscaled logits [B, H, W, num_classes]
    losses.py     loss(logits, labels, ...) in the 'reshape' and 'reshape_free' variants,
                  void masking, class weights; predictions(), probabilities()
    compare.py    the reference comparison of the two loss variants
    config.py     the run config (dataclass <-> config.json), validated on load
    train.py      the tf.compat.v1.Session loop: Saver, resume, summaries, signals
    metrics.py    streaming confusion matrix and the FCN paper's metrics
    visualize.py  class palette, coloured overlays
    cli.py        the `fcn-tf1` command and its subcommands

TensorFlow is used only through ``tf.compat.v1`` graph mode: every graph is
built inside an explicit ``tf.Graph().as_default()`` block and run in a
``tf.compat.v1.Session``.
"""

__version__ = "0.1.0"
