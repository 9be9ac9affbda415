"""Confusion matrix and FCN metrics against hand-computed examples."""
import json
import time

import numpy as np
import pytest

from fcn_tf1 import metrics

NAMES3 = ["sky", "tree", "road"]
VOID = 255

# A 3x4 ground truth with two void pixels, and a prediction with 3 mistakes.
GT = np.array([[0, 0, 0, 0],
               [1, 1, 1, VOID],
               [2, 2, VOID, 1]], np.uint8)
PRED = np.array([[0, 0, 0, 1],
                 [1, 1, 2, 0],
                 [2, 0, 2, 1]], np.int64)
# Counted by hand, pixel by pixel (void pixels skipped whatever was predicted):
#   sky : 0->0 three times, 0->1 once
#   tree: 1->1 three times (row 1 twice, row 2 once), 1->2 once
#   road: 2->2 once, 2->0 once
HAND = np.array([[3, 1, 0],
                 [0, 3, 1],
                 [1, 0, 1]])


def test_confusion_matrix_by_hand():
    matrix = metrics.confusion_matrix(GT, PRED, num_classes=3)
    assert matrix.dtype == np.int64 and matrix.shape == (3, 3)
    np.testing.assert_array_equal(matrix, HAND)


def test_void_pixels_excluded_whatever_predicted():
    gt = np.full((5, 5), VOID, np.uint8)
    gt[0, 0] = 1
    for fill in (0, 1, 2):
        pred = np.full((5, 5), fill, np.int32)
        pred[0, 0] = 1
        expected = np.zeros((3, 3), np.int64)
        expected[1, 1] = 1
        np.testing.assert_array_equal(metrics.confusion_matrix(gt, pred, num_classes=3), expected)


def test_metrics_by_hand():
    result = metrics.compute_metrics(HAND, NAMES3, num_images=1)
    assert set(result) == {"pixel_accuracy", "mean_accuracy", "mean_iou", "frequency_weighted_iou",
                           "mean_iou_gt_or_predicted", "conventions",
                           "num_images", "classes_evaluated", "per_class", "confusion_matrix"}
    # 7 of 10 scored pixels right; t = (4, 4, 2), predicted = (4, 4, 2), n_ii = (3, 3, 1)
    assert result["pixel_accuracy"] == pytest.approx(7 / 10)
    assert result["mean_accuracy"] == pytest.approx((3 / 4 + 3 / 4 + 1 / 2) / 3)
    ious = [3 / (4 + 4 - 3), 3 / (4 + 4 - 3), 1 / (2 + 2 - 1)]
    assert result["mean_iou"] == pytest.approx(sum(ious) / 3)
    assert result["frequency_weighted_iou"] == pytest.approx(
        0.4 * ious[0] + 0.4 * ious[1] + 0.2 * ious[2])
    assert result["per_class"]["road"] == {
        "accuracy": pytest.approx(0.5), "iou": pytest.approx(1 / 3),
        "gt_pixels": 2, "predicted_pixels": 2}
    assert result["classes_evaluated"] == NAMES3
    assert result["num_images"] == 1
    assert result["confusion_matrix"] == HAND.tolist()
    assert all(type(v) is int for row in result["confusion_matrix"] for v in row)
    assert type(result["mean_iou"]) is float
    json.dumps(result)  # serialisable as is


def test_perfect_prediction_is_one_everywhere():
    gt = np.array([[0, 1, 2], [2, 1, VOID]], np.uint8)
    pred = np.where(gt == VOID, 0, gt)
    result = metrics.compute_metrics(metrics.confusion_matrix(gt, pred, 3), NAMES3)
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "frequency_weighted_iou"):
        assert result[key] == 1.0
    assert all(row["accuracy"] == 1.0 and row["iou"] == 1.0
               for row in result["per_class"].values())


def test_absent_class_excluded_and_differs_from_fcn_score_py():
    # road (2) never in the ground truth but predicted twice.
    matrix = np.array([[4, 0, 1],
                       [1, 3, 1],
                       [0, 0, 0]])
    result = metrics.compute_metrics(matrix, NAMES3)
    assert result["classes_evaluated"] == ["sky", "tree"]
    assert result["per_class"]["road"] == {
        "accuracy": None, "iou": None, "gt_pixels": 0, "predicted_pixels": 2}
    iou_sky, iou_tree = 4 / (5 + 5 - 4), 3 / (5 + 3 - 3)
    assert result["mean_iou"] == pytest.approx((iou_sky + iou_tree) / 2)
    assert result["mean_accuracy"] == pytest.approx((4 / 5 + 3 / 5) / 2)

    # FCN's score.py: np.nanmean over all classes counts road as IU 0.
    with np.errstate(divide="ignore", invalid="ignore"):
        iu = np.diag(matrix) / (matrix.sum(1) + matrix.sum(0) - np.diag(matrix))
        fcn_mean_iu = np.nanmean(iu)
        fcn_mean_acc = np.nanmean(np.diag(matrix) / matrix.sum(1))
        freq = matrix.sum(1) / matrix.sum()
    assert fcn_mean_iu == pytest.approx((iou_sky + iou_tree) / 3)
    assert result["mean_iou"] > fcn_mean_iu + 0.1
    # ... and that convention is reported beside ours, named
    assert result["mean_iou_gt_or_predicted"] == pytest.approx(fcn_mean_iu)
    assert "score.py" in result["conventions"]["mean_iou_gt_or_predicted"]
    # The other three numbers agree with score.py.
    assert result["mean_accuracy"] == pytest.approx(fcn_mean_acc)
    assert result["frequency_weighted_iou"] == pytest.approx((freq[freq > 0] * iu[freq > 0]).sum())
    assert result["pixel_accuracy"] == pytest.approx(np.diag(matrix).sum() / matrix.sum())
    json.dumps(result)


def test_absent_and_never_predicted_class():
    matrix = np.array([[2, 0, 0], [0, 0, 0], [0, 0, 2]])
    result = metrics.compute_metrics(matrix, NAMES3)
    assert result["per_class"]["tree"]["iou"] is None
    assert result["mean_iou"] == 1.0
    assert result["mean_iou_gt_or_predicted"] == 1.0  # neither in truth nor predicted: skipped


def test_all_void_gives_none_without_warnings():
    gt = np.full((2, 4, 4), VOID, np.uint8)
    matrix = metrics.confusion_matrix(gt, np.zeros_like(gt), num_classes=3)
    assert matrix.sum() == 0
    with np.errstate(all="raise"):
        result = metrics.compute_metrics(matrix, NAMES3, num_images=2)
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "mean_iou_gt_or_predicted",
                "frequency_weighted_iou"):
        assert result[key] is None
    assert result["classes_evaluated"] == []
    assert result["num_images"] == 2
    assert all(row == {"accuracy": None, "iou": None, "gt_pixels": 0, "predicted_pixels": 0}
               for row in result["per_class"].values())
    json.dumps(result)
    assert "n/a" in metrics.format_table(result)


def test_streaming_equals_one_shot():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 33, size=(6, 16, 20)).astype(np.uint8)
    gt[rng.random(gt.shape) < 0.1] = VOID
    pred = rng.integers(0, 33, size=gt.shape)
    stream = metrics.ConfusionMatrix()
    stream.update(gt[:2], pred[:2])
    stream.update(gt[2:5].astype(np.int64), pred[2:5].astype(np.int32))
    stream.update(gt[5], pred[5])  # a single [H, W] image
    np.testing.assert_array_equal(stream.matrix, metrics.confusion_matrix(gt, pred))
    assert stream.num_images == 6
    assert stream.matrix.sum() == (gt != VOID).sum()
    stream.matrix[0, 0] = -1  # a copy: the accumulator is untouched
    assert stream.matrix.min() >= 0
    stream.reset()
    assert stream.matrix.sum() == 0 and stream.num_images == 0


def test_update_leaves_matrix_unchanged_on_error():
    stream = metrics.ConfusionMatrix(num_classes=3)
    stream.update(GT, PRED)
    with pytest.raises(ValueError, match="prediction label out of range"):
        stream.update(GT, np.full(GT.shape, 3))
    np.testing.assert_array_equal(stream.matrix, HAND)
    assert stream.num_images == 1


@pytest.mark.parametrize("gt, pred, message", [
    (np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.int64), "shape"),
    (np.zeros((2, 2), np.uint8), np.full((2, 2), -1), "prediction label out of range"),
    (np.zeros((2, 2), np.uint8), np.full((2, 2), 33), "prediction label out of range"),
    (np.full((2, 2), 40, np.uint8), np.zeros((2, 2), np.int64), "ground truth label out of range"),
    (np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.float32), "integer"),
])
def test_confusion_matrix_rejects(gt, pred, message):
    with pytest.raises(ValueError, match=message):
        metrics.confusion_matrix(gt, pred)


def test_prediction_at_void_pixels_is_not_checked():
    gt = np.array([[0, VOID]], np.uint8)
    pred = np.array([[0, VOID]], np.uint8)  # e.g. a map already masked for display
    assert metrics.confusion_matrix(gt, pred)[0, 0] == 1


def test_compute_metrics_rejects():
    with pytest.raises(ValueError, match="3 class names"):
        metrics.compute_metrics(np.zeros((2, 2), np.int64), NAMES3)
    with pytest.raises(ValueError, match="square"):
        metrics.compute_metrics(np.zeros((3, 2), np.int64), NAMES3)
    with pytest.raises(ValueError, match="non-negative integer"):
        metrics.compute_metrics(np.full((3, 3), 0.5), NAMES3)


def test_format_table():
    matrix = np.array([[4, 0, 1], [1, 3, 1], [0, 0, 0]])
    text = metrics.format_table(metrics.compute_metrics(matrix, NAMES3, num_images=7))
    lines = text.splitlines()
    assert lines[0].split() == ["class", "gt", "pixels", "pred", "pixels", "acc", "%", "IU", "%"]
    sky = next(line for line in lines if line.startswith("sky"))
    assert sky.split() == ["sky", "5", "5", "80.00", "66.67"]
    assert not any(line.startswith("road") for line in lines)
    assert "mean IU                 63.33 %   (classes in the ground truth)" in lines
    # score.py's convention counts road, predicted but absent, as IU 0: (66.67 + 60 + 0) / 3
    assert ("mean IU, score.py       42.22 %   (classes in the ground truth or predicted)"
            in lines)
    assert "images evaluated        7" in lines
    assert lines[-1] == "not in ground truth: road (predicted 2 px)"


@pytest.mark.slow  # a wall-clock bound: it belongs with the long checks, not the timed tiers
def test_eval_sized_input_is_fast():
    # 50 full-size SIFT Flow images (~0.05 s here); the bound is loose for a busy machine,
    # it only catches a per-pixel Python loop (which would take minutes).
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 34, size=(50, 256, 256), dtype=np.uint8)
    gt[gt == 33] = VOID
    pred = rng.integers(0, 33, size=gt.shape, dtype=np.int64)
    start = time.perf_counter()
    matrix = metrics.confusion_matrix(gt, pred)
    elapsed = time.perf_counter() - start
    assert matrix.sum() == (gt != VOID).sum()
    assert elapsed < 2.0, f"{elapsed:.2f} s for 50 images"
