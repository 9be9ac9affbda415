"""``fcn-tf1 export``: a SavedModel that plain TF2 code serves.

The graph is the run's inference graph with a uint8 input, written with the
TF1 ``SavedModelBuilder``; TF2 loads it eagerly::

    model = tf.saved_model.load(EXPORT_DIR)
    out = model.signatures["serving_default"](images=tf.constant(batch_uint8))
    out["classes"]        # int32 [N, H, W]
    out["probabilities"]  # float32 [N, H, W, num_classes]

Both outputs include the run's prior correction (config ``prior_correction``),
as eval and predict do.

The export is built in a temporary directory beside ``out_dir`` and renamed at
the end, so a failed export leaves nothing under the final name.
"""
import pathlib
import shutil
import tempfile

import tensorflow as tf

from fcn_tf1 import config as config_lib
from fcn_tf1 import checkpoints, graph
from fcn_tf1.errors import FcnError

tf1 = tf.compat.v1


def export(train_dir, out_dir, checkpoint=None):
    """Writes the SavedModel of ``train_dir``'s checkpoint to ``out_dir`` (must not exist)."""
    out_dir = pathlib.Path(out_dir)
    if out_dir.exists():
        raise FcnError(f"{out_dir}: already exists; give a new --out directory")
    config = config_lib.load(train_dir)
    checkpoint = checkpoints.find(train_dir, checkpoint)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        with tf.Graph().as_default():
            images = tf1.placeholder(tf.uint8, [None, None, None, 3], name="images")
            logits = graph.inference(tf.cast(images, tf.float32), config)
            logits = graph.decision_logits(logits, config)  # the run's prior correction
            classes = tf.cast(tf.argmax(logits, axis=-1), tf.int32, name="classes")
            probabilities = tf.nn.softmax(logits, name="probabilities")
            with tf1.Session() as session:
                checkpoints.restore_model(session, checkpoint, averaged=config.ema_decay > 0)
                builder = tf1.saved_model.Builder(str(staging / "model"))
                signature = tf1.saved_model.predict_signature_def(
                    inputs={"images": images},
                    outputs={"classes": classes, "probabilities": probabilities})
                builder.add_meta_graph_and_variables(
                    session, [tf1.saved_model.tag_constants.SERVING],
                    signature_def_map={"serving_default": signature}, strip_default_attrs=True)
                builder.save()
        (staging / "model").rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir
