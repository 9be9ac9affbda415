"""losses.py: both loss variants against an independent numpy computation, void, bad labels."""
import numpy as np
import pytest
import tensorflow as tf

from fcn_tf1 import losses
from fcn_tf1.errors import DataError

C = 33
VOID = 255


def numpy_loss_and_grad(logits, labels, class_weights=None):
    """float64 reference: weighted mean cross entropy over valid pixels and d loss / d logits."""
    logits = logits.astype(np.float64)
    valid = labels != VOID
    safe = np.where(valid, labels, 0)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    ce = -np.take_along_axis(log_softmax, safe[..., None], axis=-1)[..., 0]
    weights = valid.astype(np.float64)
    if class_weights is not None:
        weights = weights * np.asarray(class_weights, np.float64)[safe]
    total = weights.sum()
    if total == 0:
        return 0.0, np.zeros_like(logits)
    onehot = np.eye(C)[safe]
    grad = weights[..., None] * (np.exp(log_softmax) - onehot) / total
    return float((weights * ce).sum() / total), grad


def run_losses(logits, labels, class_weights=None, label_dtype=tf.int64):
    """Both variants and their logits gradients, fed through placeholders of unknown shape."""
    with tf.Graph().as_default():
        logits_in = tf.compat.v1.placeholder(tf.float32, [None, None, None, C])
        labels_in = tf.compat.v1.placeholder(label_dtype, [None, None, None])
        fetches = {}
        for variant in losses.VARIANTS:
            value = losses.loss(logits_in, labels_in, C, VOID, class_weights, variant)
            fetches[variant] = (value, tf.gradients(value, logits_in)[0])
        with tf.compat.v1.Session() as session:
            return session.run(fetches, {logits_in: logits, labels_in: labels})


def random_batch(seed=0, shape=(2, 6, 7)):
    rng = np.random.RandomState(seed)
    logits = (rng.randn(*shape, C) * 4).astype(np.float32)
    labels = rng.randint(0, C, shape)
    labels[0, :2] = VOID  # void rows
    labels[1, 3, 3:] = VOID
    return logits, labels


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "class_weights"])
@pytest.mark.parametrize("label_dtype", [tf.int64, tf.int32])
def test_variants_equal_each_other_and_numpy(weighted, label_dtype):
    logits, labels = random_batch()
    class_weights = np.random.RandomState(1).uniform(0.2, 3.0, C).astype(np.float32) if weighted else None
    expected_loss, expected_grad = numpy_loss_and_grad(logits, labels, class_weights)
    result = run_losses(logits, labels.astype(label_dtype.as_numpy_dtype), class_weights, label_dtype)
    (loss_r, grad_r), (loss_f, grad_f) = result["reshape"], result["reshape_free"]
    assert loss_r == pytest.approx(loss_f, rel=1e-6)
    assert loss_r == pytest.approx(expected_loss, rel=1e-6)
    scale = np.abs(expected_grad).max()
    assert np.abs(grad_r - grad_f).max() <= 1e-5 * scale
    assert np.abs(grad_r - expected_grad).max() <= 1e-5 * scale
    # Void pixels contribute nothing.
    assert not np.any(grad_r[labels == VOID])


def test_perfect_logits_give_zero_loss():
    _, labels = random_batch()
    logits = np.eye(C, dtype=np.float32)[np.where(labels == VOID, 5, labels)] * 40.0 - 20.0
    result = run_losses(logits, labels)
    for variant in losses.VARIANTS:
        assert 0.0 <= result[variant][0] < 1e-6


@pytest.mark.parametrize("weighted", [False, True])
def test_all_void_batch_gives_zero_loss_and_zero_finite_gradients(weighted):
    logits, labels = random_batch()
    labels[...] = VOID
    result = run_losses(logits, labels, np.ones(C) if weighted else None)
    for variant in losses.VARIANTS:
        value, grad = result[variant]
        assert value == 0.0
        assert np.all(np.isfinite(grad)) and not np.any(grad)


@pytest.mark.parametrize("bad_value", [40, -1, 33])
@pytest.mark.parametrize("variant", losses.VARIANTS)
def test_bad_labels_raise_our_short_error(bad_value, variant):
    logits, labels = random_batch()
    labels[1, 2, 2] = bad_value
    with tf.Graph().as_default():
        value = losses.loss(tf.constant(logits), tf.constant(labels, tf.int64), variant=variant)
        with tf.compat.v1.Session() as session:
            with pytest.raises(tf.errors.InvalidArgumentError) as info:
                session.run(value)
    message = info.value.message
    assert "labels must be in [0, 32] or the void label 255" in message
    assert str(bad_value) in message
    assert "Received a label value" not in message  # TF's own op error never runs


def test_static_class_mismatch_and_unknown_variant():
    with tf.Graph().as_default():
        logits = tf.zeros([1, 4, 4, 21])
        labels = tf.zeros([1, 4, 4], tf.int64)
        with pytest.raises(ValueError, match="21 classes"):
            losses.loss(logits, labels, num_classes=33)
        with pytest.raises(ValueError, match="variant"):
            losses.loss(logits, labels, num_classes=21, variant="average")


def test_predictions_and_probabilities():
    logits, _ = random_batch()
    with tf.Graph().as_default():
        pred, prob = losses.predictions(tf.constant(logits)), losses.probabilities(tf.constant(logits))
        assert pred.dtype == tf.int64
        with tf.compat.v1.Session() as session:
            pred, prob = session.run([pred, prob])
    np.testing.assert_array_equal(pred, logits.argmax(-1))
    assert prob.shape == logits.shape
    np.testing.assert_allclose(prob.sum(-1), 1.0, rtol=1e-5)


def test_validate_labels():
    labels = np.array([[0, 32], [255, 7]], np.uint8)
    losses.validate_labels(labels)
    with pytest.raises(DataError, match=r"train\.h5: labels must be in \[0, 32\] or the void label 255; found 40"):
        losses.validate_labels(np.array([[0, 40], [40, 255]]), source="train.h5")
    with pytest.raises(DataError, match="found -1"):
        losses.validate_labels(np.array([-1, 3]))


def test_median_frequency_weights():
    # Plain frequencies 10/70, 20/70, 40/70: median 20/70.
    weights = losses.median_frequency_weights([10, 20, 0, 40])
    assert weights.dtype == np.float32 and weights.shape == (4,)
    np.testing.assert_allclose(weights, [2.0, 1.0, 0.0, 0.5], rtol=1e-6)
    # Eigen & Fergus: frequency over the pixels of the images where the class is present.
    weights = losses.median_frequency_weights([10, 20, 0, 40], presence_pixel_counts=[100, 40, 0, 80])
    np.testing.assert_allclose(weights, [5.0, 1.0, 0.0, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(losses.median_frequency_weights(np.zeros(3)), 0.0)


def test_class_priors_and_prior_offsets():
    priors = losses.class_priors([30, 10, 0, 60])
    assert priors == pytest.approx((0.3, 0.1, 0.0, 0.6))
    offsets = losses.prior_offsets(priors, 0.5)
    assert offsets.dtype == np.float32
    np.testing.assert_allclose(offsets[[0, 1, 3]], -0.5 * np.log([0.3, 0.1, 0.6]), rtol=1e-6)
    assert offsets[2] == offsets[3]  # a class never seen in training gets no boost
    assert offsets[1] > offsets[0] > offsets[3]  # the rarer, the larger the boost
    np.testing.assert_array_equal(losses.prior_offsets(priors, 0.0), np.zeros(4, np.float32))
    # tau = 1 turns a calibrated p(c|x) into p(c|x) / p(c): the argmax of the balanced posterior
    posterior = np.array([0.5, 0.2, 0.0, 0.3])
    logits = np.log(posterior + 1e-12)
    assert np.argmax(logits) == 0
    assert np.argmax(logits + losses.prior_offsets(priors, 1.0)) == 1  # 0.2/0.1 > 0.5/0.3
    for bad in ([], [0, 0], [1, -1]):
        with pytest.raises(ValueError):
            losses.class_priors(bad)
        with pytest.raises(ValueError):
            losses.prior_offsets(bad, 1.0)
