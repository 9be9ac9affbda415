"""The per-pixel loss: softmax cross entropy on intact logits, void pixels masked out.

    VARIANTS                                 the loss variants (config.LOSS_VARIANTS)
    loss(logits, labels, num_classes=33, void_label=255, class_weights=None,
         variant='reshape')                  -> float32 scalar
    lovasz_softmax(logits, labels, ...)      -> float32 scalar (a surrogate of 1 - mean IU)
    predictions(logits)                      -> int64 [B, H, W] (argmax)
    probabilities(logits)                    -> float32 [B, H, W, C] (softmax)
    validate_labels(labels, ...)             numpy check, raises DataError
    median_frequency_weights(counts, ...)    -> float32 numpy [C]
    class_priors(counts)                     -> tuple of float [C] (pixel frequencies)
    prior_offsets(priors, tau)               -> float32 numpy [C] (-tau * log prior)

Why neither an average nor an argmax may come before the loss. The network
emits logits [B, H, W, 33]: one score vector per pixel, and the task is to
label every pixel. The loss must score each pixel's own prediction against
that pixel's label and average the per-pixel losses afterwards.
Averaging the logits over the pixels first would leave one score vector per
image and throw away exactly the spatial prediction being trained (and
there is no single label to compare it with). Taking the argmax first would
give hard class indices: argmax is piecewise constant, so its gradient is
zero almost everywhere (TF defines none), and the training signal vanishes.
``tf.nn.sparse_softmax_cross_entropy_with_logits`` wants the *unscaled*
logits because it applies the (log-)softmax itself, in a numerically stable
fused form; feeding it probabilities would apply softmax twice. argmax is
for predictions only.

The two variants compute the same thing:

* ``'reshape'``: logits -> [-1, num_classes], labels -> [-1], one row per
  pixel, the op applied to the rows (the classic TF1 formulation).
* ``'reshape_free'``: the op applied to logits [B, H, W, C] and labels
  [B, H, W] directly (the op accepts any rank, last axis = classes).

Void pixels (label 255 in SIFT Flow) must never reach the op: an
out-of-range label raises on CPU and silently gives NaN on GPU. They are
replaced by class 0 before the op and their per-pixel losses multiplied by
0. A non-void label outside [0, num_classes - 1] is a data error: a graph
assertion placed before the op stops the step with a short message (TF's
own error would print every label of the batch).

Normalisation: with per-pixel weights w (1 for valid pixels, or
class_weights[label]; 0 for void), loss = sum(w * ce) / sum(w), the
(weighted) mean over valid pixels; a batch without valid pixels gives 0
and zero gradients, never NaN.
"""
import numpy as np
import tensorflow as tf

from fcn_tf1.config import LOSS_VARIANTS as VARIANTS
from fcn_tf1.config import LOVASZ_STRIDE
from fcn_tf1.errors import DataError
from fcn_tf1.siftflow import NUM_CLASSES, VOID_LABEL


def _label_message(num_classes, void_label):
    return f"labels must be in [0, {num_classes - 1}] or the void label {void_label}"


def loss(logits, labels, num_classes=NUM_CLASSES, void_label=VOID_LABEL, class_weights=None,
         variant="reshape"):
    """Mean softmax cross entropy over the valid (non-void) pixels.

    Args:
        logits: float32 [B, H, W, num_classes], unscaled (no softmax applied).
        labels: int32 or int64 (uint8 also accepted) [B, H, W], values in
            [0, num_classes - 1] or ``void_label``.
        num_classes: int C, must equal the logits' last dimension.
        void_label: the label of unlabelled pixels, excluded from the loss.
        class_weights: None, or float [num_classes] (numpy, list or tensor)
            weighting each pixel by its class; the loss is then
            sum(w[y] * ce) / sum(w[y]) over valid pixels.
        variant: 'reshape' (flatten to [-1, C] / [-1] before the op) or
            'reshape_free' (4-D logits and 3-D labels straight into the op).

    Returns:
        float32 scalar tensor; 0.0 when no pixel is valid.

    Raises:
        ValueError: unknown variant, or logits' static class dimension differs
            from num_classes.
        tf.errors.InvalidArgumentError (at run time): a non-void label outside
            [0, num_classes - 1]; the message starts with "labels must be in".
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    with tf.name_scope(f"loss_{variant}"):
        logits = tf.convert_to_tensor(logits)
        if logits.dtype != tf.float32:
            logits = tf.cast(logits, tf.float32)
        if logits.shape[-1] is not None and logits.shape[-1] != num_classes:
            raise ValueError(f"logits have {logits.shape[-1]} classes, num_classes is {num_classes}")
        labels = tf.cast(labels, tf.int32)  # int64, int32, uint8 all become one index type
        valid = tf.not_equal(labels, void_label)
        labels = _checked_labels(labels, valid, num_classes, void_label)
        # Void pixels get an in-range stand-in label; their loss is zeroed by the weights below.
        safe_labels = tf.where(valid, labels, tf.zeros_like(labels))

        weights = tf.cast(valid, tf.float32)
        if class_weights is not None:
            class_weights = tf.reshape(tf.cast(class_weights, tf.float32), [num_classes])
            weights *= tf.gather(class_weights, safe_labels)

        if variant == "reshape":
            pixel_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.reshape(safe_labels, [-1]),
                logits=tf.reshape(logits, [-1, num_classes]))
            weights = tf.reshape(weights, [-1])
        else:
            pixel_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=safe_labels, logits=logits)
        # divide_no_nan: an all-void batch gives 0 / 0 -> 0 with zero (finite) gradients.
        return tf.math.divide_no_nan(tf.reduce_sum(weights * pixel_loss), tf.reduce_sum(weights),
                                     name="value")


def lovasz_softmax(logits, labels, num_classes=NUM_CLASSES, void_label=VOID_LABEL,
                   stride=LOVASZ_STRIDE):
    """The Lovasz-softmax loss (Berman et al., CVPR 2018): a convex surrogate of 1 - mean IU.

    For each class c present in ``labels``, the pixel errors e_i = |[y_i = c] - p_i(c)|
    (softmax probabilities) are sorted in decreasing order and weighted by
    the increments of the Jaccard loss along that order (the gradient of its
    Lovasz extension); the loss is the mean over the present classes. It is
    computed over the whole batch at once (the IU of the set, not of each
    image), on the pixels of every ``stride``-th row and column (sorting all
    of them costs more than the network at full resolution); void pixels are
    left out. Classes absent from the batch add nothing.

    Args:
        logits: float32 [B, H, W, num_classes], unscaled.
        labels: integer [B, H, W], values in [0, num_classes - 1] or ``void_label``
            (not checked here: :func:`loss` checks them).
        num_classes: int C.
        void_label: the label of unlabelled pixels.
        stride: int >= 1, the subsampling of rows and columns (1: every pixel).

    Returns:
        float32 scalar tensor in [0, 1]; 0 when no pixel is valid.
    """
    stride = int(stride)
    if stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    with tf.name_scope("lovasz_softmax"):
        logits = tf.cast(logits[:, ::stride, ::stride, :], tf.float32)
        labels = tf.cast(labels[:, ::stride, ::stride], tf.int32)
        valid = tf.reshape(tf.not_equal(labels, void_label), [-1])
        probs = tf.boolean_mask(tf.reshape(tf.nn.softmax(logits), [-1, num_classes]), valid)
        labels = tf.boolean_mask(tf.reshape(labels, [-1]), valid)
        truth = tf.transpose(tf.one_hot(labels, num_classes, dtype=tf.float32))  # [C, P]
        errors = tf.abs(truth - tf.transpose(probs))
        # One more pixel, of no class and error 0, changes nothing but keeps P >= 1
        # (top_k's gradient fails on an empty row: a batch without a valid sampled pixel).
        nothing = tf.zeros([num_classes, 1])
        truth, errors = tf.concat([truth, nothing], 1), tf.concat([errors, nothing], 1)
        sorted_errors, order = tf.math.top_k(errors, k=tf.shape(errors)[1], sorted=True)
        sorted_truth = tf.gather(truth, order, batch_dims=1)
        # Jaccard loss of the first k pixels of the order, k = 1..P, and its increments
        total = tf.reduce_sum(sorted_truth, axis=1, keepdims=True)
        intersection = total - tf.cumsum(sorted_truth, axis=1)
        union = total + tf.cumsum(1.0 - sorted_truth, axis=1)
        jaccard = 1.0 - intersection / union
        increments = tf.concat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], axis=1)
        per_class = tf.reduce_sum(sorted_errors * tf.stop_gradient(increments), axis=1)
        present = tf.cast(tf.reshape(total, [-1]) > 0, tf.float32)
        return tf.math.divide_no_nan(tf.reduce_sum(per_class * present), tf.reduce_sum(present),
                                     name="value")


def _checked_labels(labels, valid, num_classes, void_label):
    """``labels`` behind an assertion that every non-void label is a class index."""
    bad = tf.logical_and(valid, tf.logical_or(labels < 0, labels >= num_classes))
    check = tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(bad)),
        [_label_message(num_classes, void_label) + "; first offending values:",
         tf.boolean_mask(labels, bad)[:5]],
        summarize=5, name="check_labels")
    with tf.control_dependencies([check]):
        return tf.identity(labels)


def predictions(logits):
    """Per-pixel class: argmax over the class axis.

    Args:
        logits: float32 [B, H, W, C] (logits or probabilities: same argmax).

    Returns:
        int64 [B, H, W].
    """
    return tf.argmax(logits, axis=-1, name="predictions")


def probabilities(logits):
    """Per-pixel class probabilities: softmax over the class axis.

    Args:
        logits: float32 [B, H, W, C], unscaled.

    Returns:
        float32 [B, H, W, C], summing to 1 over C.
    """
    return tf.nn.softmax(logits, axis=-1, name="probabilities")


def validate_labels(labels, num_classes=NUM_CLASSES, void_label=VOID_LABEL, source="batch"):
    """Raises DataError unless every label is a class index or the void label.

    Args:
        labels: integer numpy array of any shape.
        num_classes: int C.
        void_label: the void label.
        source: what to name in the message (a file, an image name, 'batch').

    Raises:
        DataError: "<source>: labels must be in [0, 32] or the void label 255;
            found 40 (7 bad pixels)".
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise DataError(f"{source}: labels must be integers, got dtype {labels.dtype}")
    bad = (labels != void_label) & ((labels < 0) | (labels >= num_classes))
    count = int(np.count_nonzero(bad))
    if count:
        values = ", ".join(str(v) for v in np.unique(labels[bad])[:5])
        raise DataError(f"{source}: {_label_message(num_classes, void_label)}; "
                        f"found {values} ({count} bad pixel{'s' if count > 1 else ''})")


def median_frequency_weights(class_pixel_counts, presence_pixel_counts=None):
    """Median frequency balancing (Eigen & Fergus, ICCV 2015): w_c = median(freq) / freq_c.

    freq_c = (pixels of class c) / (total pixels of the images in which c is
    present), Eigen & Fergus' definition, when ``presence_pixel_counts`` is
    given; without it, freq_c = count_c / sum of all counts (the plain class
    frequency; the two differ only in how rare-but-local classes are
    boosted). The median is taken over the classes present; classes with no
    pixel get weight 0 (they never occur as a label, so the value is unused).

    Args:
        class_pixel_counts: int or float array [num_classes], labelled pixels
            per class (void excluded), e.g. from ``H5Dataset.label_counts``.
        presence_pixel_counts: optional array [num_classes], for each class
            the total number of (non-void) pixels of the images containing it.

    Returns:
        float32 numpy [num_classes]; 1.0 at the median-frequency class.
    """
    counts = np.asarray(class_pixel_counts, dtype=np.float64)
    if counts.ndim != 1 or np.any(counts < 0):
        raise ValueError("class_pixel_counts must be a 1-D array of non-negative counts")
    present = counts > 0
    weights = np.zeros_like(counts)
    if not present.any():
        return weights.astype(np.float32)
    if presence_pixel_counts is None:
        totals = np.full_like(counts, counts.sum())
    else:
        totals = np.asarray(presence_pixel_counts, dtype=np.float64)
        if totals.shape != counts.shape or np.any(totals[present] < counts[present]):
            raise ValueError("presence_pixel_counts must be [num_classes] and at least the class counts")
    freq = counts[present] / totals[present]
    weights[present] = np.median(freq) / freq
    return weights.astype(np.float32)


def class_priors(class_pixel_counts):
    """The training label distribution: each class's share of the labelled pixels.

    Args:
        class_pixel_counts: array [num_classes] of labelled pixels per class
            (void excluded), e.g. ``H5Dataset.label_counts(train_indices)``.

    Returns:
        tuple of float [num_classes], summing to 1.
    """
    counts = np.asarray(class_pixel_counts, dtype=np.float64)
    if counts.ndim != 1 or np.any(counts < 0) or not counts.sum() > 0:
        raise ValueError("class_pixel_counts must be a 1-D array of non-negative counts, "
                         "not all zero")
    return tuple(float(c) for c in counts / counts.sum())


def prior_offsets(priors, tau):
    """Post-hoc logit adjustment (Menon et al., ICLR 2021): -tau * log(prior_c), per class.

    Added to the logits before the argmax, they shift the decision from the
    most probable class toward the class that is most probable *relative to
    how often it was seen in training*: for a model trained with the plain
    loss on uniformly drawn images, tau = 1 turns it into a classifier for
    balanced (mean class) accuracy; smaller tau trades less pixel accuracy
    for it. After class weights or repeat factor sampling the model has
    already shifted toward the rare classes, so a smaller tau is the
    balanced one (measured: README). A class with prior 0 (never labelled in
    training) gets the smallest offset of the seen classes, so it is never
    boosted.

    Args:
        priors: [num_classes] class frequencies (``class_priors``).
        tau: float >= 0, the strength.

    Returns:
        float32 numpy [num_classes].
    """
    priors = np.asarray(priors, dtype=np.float64)
    seen = priors > 0
    if priors.ndim != 1 or np.any(priors < 0) or not seen.any():
        raise ValueError("priors must be a 1-D array of non-negative frequencies, not all zero")
    offsets = np.zeros_like(priors)
    offsets[seen] = -tau * np.log(priors[seen])
    offsets[~seen] = offsets[seen].min()
    return offsets.astype(np.float32)
