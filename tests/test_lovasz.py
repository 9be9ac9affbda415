"""--lovasz-weight: the Lovasz-softmax loss against numpy, and its place in the data loss."""
import types

import numpy as np
import pytest
import tensorflow as tf

from fcn_tf1 import config as config_lib, graph, losses, validation
from fcn_tf1.errors import ConfigError

tf1 = tf.compat.v1
C = 5
VOID = 255


def numpy_lovasz(logits, labels, stride):
    """Berman et al.'s algorithm one class at a time, in float64, over the sampled valid pixels."""
    logits = logits[:, ::stride, ::stride].astype(np.float64)
    labels = labels[:, ::stride, ::stride]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    valid = labels != VOID
    probs, labels = probs[valid], labels[valid]
    per_class = []
    for c in range(C):
        truth = (labels == c).astype(np.float64)
        if not truth.any():
            continue
        errors = np.abs(truth - probs[:, c])
        order = np.argsort(-errors, kind="stable")
        sorted_truth = truth[order]
        jaccard = np.empty(len(order))
        for k in range(1, len(order) + 1):  # the Jaccard loss of the k largest errors
            predicted_wrong = sorted_truth[:k]
            intersection = truth.sum() - predicted_wrong.sum()
            union = truth.sum() + (1 - predicted_wrong).sum()
            jaccard[k - 1] = 1 - intersection / union
        increments = np.diff(jaccard, prepend=0.0)
        per_class.append(float(errors[order] @ increments))
    return float(np.mean(per_class)) if per_class else 0.0


def run_lovasz(logits, labels, stride):
    with tf.Graph().as_default():
        logits_in = tf1.placeholder(tf.float32, [None, None, None, C])
        labels_in = tf1.placeholder(tf.int64, [None, None, None])
        value = losses.lovasz_softmax(logits_in, labels_in, C, VOID, stride=stride)
        gradient = tf.gradients(value, logits_in)[0]
        with tf1.Session() as session:
            return session.run([value, gradient], {logits_in: logits, labels_in: labels})


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_matches_numpy_with_void_pixels_and_an_absent_class(stride):
    rng = np.random.default_rng(stride)
    logits = rng.normal(0, 2, (2, 9, 7, C)).astype(np.float32)
    labels = rng.integers(0, C, (2, 9, 7))
    labels[labels == 3] = 1  # class 3 absent: it must add nothing
    labels[0, :2] = VOID
    value, gradient = run_lovasz(logits, labels, stride)
    assert value == pytest.approx(numpy_lovasz(logits, labels, stride), rel=1e-5)
    assert 0 < value < 1
    # only the sampled pixels receive a gradient, void ones none
    sampled = np.zeros(labels.shape, bool)
    sampled[:, ::stride, ::stride] = True
    touched = np.abs(gradient).sum(-1) > 0
    assert not touched[~sampled].any()
    assert not touched[labels == VOID].any()
    assert touched[sampled & (labels != VOID)].mean() > 0.5


def test_confident_right_logits_score_near_zero_and_wrong_ones_near_one():
    labels = np.random.default_rng(0).integers(0, C, (1, 6, 6))
    right = 20.0 * np.eye(C, dtype=np.float32)[labels]
    assert run_lovasz(right, labels, 1)[0] < 1e-6
    assert run_lovasz(right, (labels + 1) % C, 1)[0] > 0.99


def test_on_saturated_logits_it_is_one_minus_the_mean_iou_of_the_predictions():
    # With one-hot probabilities every error is 0 or 1 and the Lovasz extension equals the
    # Jaccard loss itself: 1 - IU of each class of the labels, counted from a confusion matrix.
    rng = np.random.default_rng(3)
    labels = rng.integers(0, C - 1, (2, 10, 10))  # class C - 1 absent from the labels
    predicted = np.where(rng.random(labels.shape) < 0.3, rng.integers(0, C, labels.shape), labels)
    labels[1, :3] = VOID
    logits = 30.0 * np.eye(C, dtype=np.float32)[predicted]
    valid = labels != VOID
    confusion = np.zeros((C, C))
    np.add.at(confusion, (labels[valid], predicted[valid]), 1)
    iou = np.diag(confusion) / (confusion.sum(0) + confusion.sum(1) - np.diag(confusion))
    expected = 1.0 - iou[:C - 1].mean()
    assert 0.2 < expected < 0.8
    assert run_lovasz(logits, labels, 1)[0] == pytest.approx(expected, abs=1e-5)


def test_towers_are_refused():
    with pytest.raises(ConfigError, match="--lovasz-weight does not combine with --towers"):
        graph.check_towers(config_lib.RunConfig(lovasz_weight=1.0), 2)
    graph.check_towers(config_lib.RunConfig(), 2)


def test_an_all_void_batch_gives_zero_and_finite_zero_gradients():
    logits = np.random.default_rng(1).normal(size=(2, 4, 4, C)).astype(np.float32)
    value, gradient = run_lovasz(logits, np.full((2, 4, 4), VOID), 1)
    assert value == 0.0
    assert np.all(gradient == 0)


def test_bad_stride_is_refused():
    with tf.Graph().as_default(), pytest.raises(ValueError, match="stride"):
        losses.lovasz_softmax(tf.zeros([1, 4, 4, C]), tf.zeros([1, 4, 4], tf.int64), C, VOID,
                              stride=0)


def test_training_data_loss_is_cross_entropy_plus_weighted_lovasz(default_data):
    config = config_lib.RunConfig(data=str(default_data), width=4, batch_size=2,
                                  lovasz_weight=0.7)
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 33, (2, 64, 64))
    labels[:, :8] = 255
    with tf.Graph().as_default():
        net = graph.build_training_graph(config)
        cross_entropy = losses.loss(net.logits, net.labels, 33, 255)
        lovasz = losses.lovasz_softmax(net.logits, net.labels, 33, 255)
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            feed = {net.images: rng.uniform(0, 255, (2, 64, 64, 3)).astype(np.float32),
                    net.labels: labels}
            data, ce, lz = session.run([net.data_loss, cross_entropy, lovasz], feed)
    assert lz > 0.5  # an untrained net is far from the labels
    assert data == pytest.approx(ce + 0.7 * lz, rel=1e-5)


def test_negative_weight_is_a_config_error():
    with pytest.raises(ConfigError, match="lovasz_weight"):
        config_lib.RunConfig(lovasz_weight=-0.5)


def test_the_learning_curve_title_names_the_term():
    def title(weight):
        run = types.SimpleNamespace(config=config_lib.RunConfig(lovasz_weight=weight),
                                    val_indices=[0, 1])
        return validation.curve_title(run)
    assert "Lovasz-softmax term 0.5" in title(0.5)
    assert "Lovasz" not in title(0.0)
