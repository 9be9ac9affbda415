#!/usr/bin/env python3
"""The classic TF1 answer's snippet, run as written as far as today's TensorFlow allows.

The question: an FCN gives logits [batch, 256, 256, 33] and labels [batch, 256, 256];
average or argmax before the loss? Neither: keep the logits, score every pixel with
``sparse_softmax_cross_entropy_with_logits`` (unscaled logits, integer labels, named
arguments), average the per-pixel losses; argmax only for the prediction. The answer's
TF1 snippet was, in essence::

    images = tf.placeholder(tf.float32, [None, 256, 256, 3])
    labels = tf.placeholder(tf.float32, [None, 256, 256])
    logits = inference(images)
    logits = tf.reshape(logits, [-1, 33])
    labels = tf.reshape(labels, [-1])
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(logits, labels))
    train_op = tf.train.AdamOptimizer(1e-3).minimize(loss)

Below it runs through ``tf.compat.v1`` on two real SIFT Flow images from data/, with
``inference()`` from this package. Every place where the original cannot run unchanged
is marked ``PORT:`` with the reason; the failing original forms are executed and
their errors printed, so what you read is what this TensorFlow does. Then the
reshape-free form, and both losses are printed (they are equal).

``masked_mean_loss`` is the masked loss in both forms: void pixels get a stand-in
label and weight 0, and the sum is divided by the number of valid pixels with
``tf.math.divide_no_nan``, so a batch with no valid pixel (all void) gives loss 0
and zero gradients instead of 0 / 0 = NaN.

Run from the repository root: ``python examples/seed_answer.py`` (a few seconds, CPU).
"""
import os
import pathlib
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter off

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from fcn_tf1 import losses  # noqa: E402
from fcn_tf1.batches import iterate_batches  # noqa: E402
from fcn_tf1.model import inference  # noqa: E402

tf1 = tf.compat.v1
DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "siftflow_sample.h5"
NUM_CLASSES = 33
VOID_LABEL = 255  # SIFT Flow's unlabelled pixels


def show_error(what, call):
    """Runs ``call`` (an original, unported form), prints the error TensorFlow raises."""
    try:
        call()
    except Exception as err:  # noqa: BLE001 - printing whatever this TF version raises
        message = str(err).strip()
        # the out-of-range error lists every label of the batch: keep its first sentence
        found = re.search(r"Received a label value of \d+ which is outside the valid range "
                          r"of \[0, \d+\)", message)
        first = found.group(0) if found else message.splitlines()[0]
        print(f"  original {what}: {type(err).__name__}: {first[:160]}")
        return
    raise AssertionError(f"{what}: expected TensorFlow to refuse it, but it ran")


def masked_mean_loss(logits, labels, void_label=VOID_LABEL, reshape=True):
    """Mean softmax cross entropy over the non-void pixels; 0.0 when there is none.

    logits: float32 [B, H, W, C], unscaled; labels: int32/int64 [B, H, W].
    ``reshape=True`` flattens to [-1, C] / [-1] before the op (the classic form),
    ``reshape=False`` hands the 4-D logits and 3-D labels to the op directly.
    """
    if reshape:
        logits = tf.reshape(logits, [-1, logits.shape[-1]])  # [B*H*W, C]
        labels = tf.reshape(labels, [-1])  # [B*H*W]
    valid = tf.not_equal(labels, tf.cast(void_label, labels.dtype))
    safe_labels = tf.where(valid, labels, tf.zeros_like(labels))  # any in-range class
    weights = tf.cast(valid, tf.float32)
    per_pixel = tf1.nn.sparse_softmax_cross_entropy_with_logits(
        labels=safe_labels, logits=logits)  # named arguments
    # divide_no_nan: an all-void batch has 0 valid pixels, and 0 / 0 would be NaN
    return tf.math.divide_no_nan(tf.reduce_sum(weights * per_pixel), tf.reduce_sum(weights))


def main():
    images_np, labels_np, names = next(iterate_batches(DATA, batch_size=2))
    void = int(np.count_nonzero(labels_np == VOID_LABEL))
    print(f"batch: {', '.join(names)} from {DATA.name}: images {list(images_np.shape)}, "
          f"labels {list(labels_np.shape)}, {void} of {labels_np.size} pixels void")
    print("where the original snippet fails on TensorFlow", tf.__version__)

    # PORT: TF 2.x has no tf.placeholder / tf.Session / tf.train.AdamOptimizer at the top
    # level; they live under tf.compat.v1 and work there in graph mode.
    show_error("tf.placeholder", lambda: tf.placeholder)

    with tf.Graph().as_default():
        tf1.set_random_seed(0)
        images = tf1.placeholder(tf.float32, [None, 256, 256, 3], name="images")
        # PORT: the original declared the labels float32; the op takes class indices,
        # int32 or int64 only, and refuses float labels when the graph is built.
        float_labels = tf1.placeholder(tf.float32, [None, 256, 256], name="float_labels")
        labels = tf1.placeholder(tf.int64, [None, 256, 256], name="labels")

        logits = inference(images, num_classes=NUM_CLASSES, width=8)  # unscaled [B, 256, 256, 33]
        flat_logits = tf.reshape(logits, [-1, NUM_CLASSES])  # [B*256*256, 33]
        flat_labels = tf.reshape(labels, [-1])  # [B*256*256]

        show_error("float32 labels", lambda: tf1.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.reshape(float_labels, [-1]), logits=flat_logits))
        # PORT: positional arguments. TF 1.0-1.15 refused them outright ("Only call
        # `sparse_softmax_cross_entropy_with_logits` with named arguments"), because 0.x
        # took (logits, labels). TF 2.x accepts positional arguments again, but in the
        # order (labels, logits): the old call hands the logits over as labels, and here
        # the op's rank check refuses it. Named arguments are right in every version.
        show_error("positional (logits, labels)", lambda: (
            tf1.nn.sparse_softmax_cross_entropy_with_logits(flat_logits, flat_labels)))

        # PORT: void pixels. Label 255 is out of range for 33 classes: on CPU the op raises,
        # on GPU it silently returns NaN. They must be masked *before* the op: give them
        # an in-range stand-in label, zero their loss, average over the valid pixels
        # (masked_mean_loss above; 0 for an all-void batch).
        # fcn_tf1.losses.loss does exactly this (and checks the other labels too).
        unmasked = tf1.nn.sparse_softmax_cross_entropy_with_logits(
            labels=flat_labels, logits=flat_logits)

        loss = masked_mean_loss(logits, labels, reshape=True)
        train_op = tf1.train.AdamOptimizer(1e-3).minimize(loss)

        # The reshape-free form: the op accepts the 4-D logits and 3-D labels directly
        # (any rank, classes on the last axis), with the same masking.
        loss_reshape_free = masked_mean_loss(logits, labels, reshape=False)

        package_loss = losses.loss(logits, labels, NUM_CLASSES, VOID_LABEL)
        prediction = tf.argmax(logits, axis=-1)  # argmax: for the prediction, never before the loss

        feed = {images: images_np, labels: labels_np}
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            show_error("unmasked void labels (CPU)", lambda: session.run(unmasked, feed))
            print("training (Adam, 1e-3) on the masked reshape loss:")
            for step in range(1, 4):
                _, value = session.run([train_op, loss], feed)
                print(f"  step {step}: loss {value:.6f}")
            # both forms on the same weights, after the steps (at step 0 every logit is 0)
            values = session.run({"reshape": loss, "reshape_free": loss_reshape_free,
                                  "package": package_loss, "prediction": prediction}, feed)

    print(f"loss reshape: {values['reshape']:.9g}")
    print(f"loss reshape-free: {values['reshape_free']:.9g}")
    print(f"fcn_tf1.losses.loss: {values['package']:.9g}")
    print(f"prediction: argmax -> {values['prediction'].dtype} {list(values['prediction'].shape)}")


if __name__ == "__main__":
    main()
