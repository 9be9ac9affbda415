"""Streaming confusion matrix and the FCN paper's segmentation metrics.

Pure numpy; nothing here touches TensorFlow::

    confusion_matrix(gt, pred, num_classes, void_label)   one batch -> int64 [C, C]
    ConfusionMatrix(num_classes, void_label).update(gt, pred)
                                      the same, accumulated over batches
    compute_metrics(matrix, names)    -> dict of pixel accuracy, mean accuracy,
                                         mean IU, frequency-weighted IU, per class
    format_table(metrics)             -> a readable per-class table

The metrics are those of Long, Shelhamer & Darrell, "Fully Convolutional
Networks for Semantic Segmentation" (their ``score.py``), with n_ij the number
of pixels of ground-truth class i predicted as class j, t_i = sum_j n_ij and
t = sum_i t_i:

    pixel accuracy          sum_i n_ii / t
    mean accuracy           mean_i  n_ii / t_i
    mean IU                 mean_i  n_ii / (t_i + sum_j n_ji - n_ii)
    frequency-weighted IU   sum_i (t_i / t) * IU_i

Rows of the matrix are ground truth, columns prediction; ground-truth void
pixels are not counted at all, whatever was predicted there. Means run over
the classes present in the ground truth only (see ``compute_metrics`` for how
that differs from ``score.py``). The class count and the void label are
arguments; they default to SIFT Flow's (33 classes, void 255).
"""
import numpy as np

from fcn_tf1.siftflow import NUM_CLASSES, VOID_LABEL


def confusion_matrix(gt, pred, num_classes=NUM_CLASSES, void_label=VOID_LABEL):
    """Counts (ground truth, prediction) pairs over the non-void pixels.

    This is FCN's ``fast_hist``: one ``np.bincount`` of ``C * gt + pred``.
    Unlike ``fast_hist``, out-of-range labels are an error, not silently dropped.

    Args:
      gt: integer array of any shape (e.g. uint8 [B, H, W] or [H, W]); values
        0..num_classes-1, or void_label for pixels that are not scored.
      pred: integer array of the same shape; values 0..num_classes-1 wherever
        gt is not void (its value at void pixels is ignored).
      num_classes: C, the number of classes.
      void_label: the ground-truth label of unscored pixels, or None if none.

    Returns:
      int64 [C, C]: element [i, j] counts pixels of true class i predicted as j.

    Raises:
      ValueError: on different shapes, non-integer arrays, or a ground-truth or
        predicted label out of range at a scored pixel.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    for name, array in (("ground truth", gt), ("prediction", pred)):
        if array.dtype.kind not in "iu":
            raise ValueError(f"{name} must be an integer array, got dtype {array.dtype}")
    if void_label is not None:
        scored = gt != void_label
        if not scored.all():
            gt, pred = gt[scored], pred[scored]
    gt = gt.ravel()
    pred = pred.ravel()
    if gt.size:
        for name, array in (("ground truth", gt), ("prediction", pred)):
            low, high = int(array.min()), int(array.max())
            if low < 0 or high >= num_classes:
                raise ValueError(f"{name} label out of range 0..{num_classes - 1}: "
                                 f"found values in {low}..{high}")
    # intp: bincount needs a safe cast to its index type, and C * gt overflows uint8.
    flat = num_classes * gt.astype(np.intp) + pred.astype(np.intp)
    counts = np.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64, copy=False)


class ConfusionMatrix:
    """A confusion matrix accumulated over batches (streaming evaluation).

    Args:
      num_classes: C, the number of classes.
      void_label: the ground-truth label of unscored pixels, or None.

    Example::

        cm = ConfusionMatrix()
        for images, labels in batches:
            cm.update(labels, session.run(predictions, {x: images}))
        metrics = compute_metrics(cm.matrix, class_names, cm.num_images)
    """

    def __init__(self, num_classes=NUM_CLASSES, void_label=VOID_LABEL):
        self.num_classes = num_classes
        self.void_label = void_label
        self.reset()

    def reset(self):
        """Forgets everything counted so far."""
        self._matrix = np.zeros((self.num_classes, self.num_classes), np.int64)
        self.num_images = 0

    def update(self, gt, pred):
        """Adds one batch.

        Args:
          gt: integer [B, H, W] or [H, W] ground truth (void_label not scored).
          pred: integer array of the same shape, values 0..C-1.

        Raises:
          ValueError: as :func:`confusion_matrix`; nothing is added then.
        """
        gt = np.asarray(gt)
        self._matrix += confusion_matrix(gt, pred, self.num_classes, self.void_label)
        self.num_images += gt.shape[0] if gt.ndim == 3 else 1

    @property
    def matrix(self):
        """int64 [C, C]: a copy of the counts, rows ground truth, cols prediction."""
        return self._matrix.copy()


def compute_metrics(matrix, class_names, num_images=None):
    """The FCN metrics of a confusion matrix, as a JSON-serialisable dict.

    Averages run over the classes PRESENT in the ground truth (t_i > 0) only
    (``mean_iou``, as the FCN paper reports SIFT Flow). SIFT Flow's test split has no cow, desert or moon pixels; the FCN authors
    exclude these three from evaluation. Their ``score.py`` takes
    ``np.nanmean`` of the per-class IU over all classes instead: a class absent
    from the ground truth gets IU = 0 / (0 + predicted - 0) = 0 as soon as it
    is predicted anywhere, and that 0 is averaged in, so its mean IU can be
    lower than ours; that convention is reported too, as
    ``mean_iou_gt_or_predicted`` (the mean over the classes present in the
    ground truth or in the prediction). Mean accuracy, pixel accuracy and
    frequency-weighted IU
    agree with ``score.py`` (absent classes give NaN accuracy, which nanmean
    skips, and weight 0 in the frequency-weighted IU).

    A matrix with no scored pixel (all ground truth void) is not an error: the
    four summary numbers are None (JSON null, "undefined", never a misleading
    0), ``classes_evaluated`` is empty and every class is absent.

    Args:
      matrix: integer [C, C] counts, rows ground truth, cols prediction.
      class_names: C class names, in label order.
      num_images: how many images were counted (reported as is), or None.

    Returns:
      dict with keys ``pixel_accuracy``, ``mean_accuracy``, ``mean_iou``,
      ``mean_iou_gt_or_predicted``, ``frequency_weighted_iou`` (floats in
      [0, 1] or None), ``conventions`` (what each mean IU averages over, in
      words), ``num_images``,
      ``classes_evaluated`` (names of the present classes, label order),
      ``per_class`` ({name: {``accuracy``, ``iou`` (float, or None for a class
      absent from the ground truth), ``gt_pixels``, ``predicted_pixels`` (int)}})
      and ``confusion_matrix`` (C lists of C ints).

    Raises:
      ValueError: on a non-square or negative matrix, C != len(class_names)
        or repeated class names.
    """
    hist = np.asarray(matrix)
    names = [str(name) for name in class_names]
    if hist.ndim != 2 or hist.shape[0] != hist.shape[1]:
        raise ValueError(f"confusion matrix must be square [C, C], got shape {hist.shape}")
    if hist.shape[0] != len(names):
        raise ValueError(f"confusion matrix is {hist.shape[0]}x{hist.shape[0]} "
                         f"but {len(names)} class names were given")
    if len(set(names)) != len(names):
        raise ValueError("class names must be unique")
    if hist.dtype.kind not in "iu" or (hist < 0).any():
        raise ValueError("confusion matrix must hold non-negative integer counts")
    hist = hist.astype(np.int64)
    true_positives = np.diag(hist)
    gt_pixels = hist.sum(axis=1)
    predicted_pixels = hist.sum(axis=0)
    total = int(gt_pixels.sum())
    present = gt_pixels > 0

    accuracy = np.full(len(names), np.nan)
    iou = np.full(len(names), np.nan)
    # For a present class the union >= t_i > 0, so neither division is by zero.
    accuracy[present] = true_positives[present] / gt_pixels[present]
    union = gt_pixels + predicted_pixels - true_positives
    iou[present] = true_positives[present] / union[present]

    per_class = {}
    for i, name in enumerate(names):
        per_class[name] = {
            "accuracy": float(accuracy[i]) if present[i] else None,
            "iou": float(iou[i]) if present[i] else None,
            "gt_pixels": int(gt_pixels[i]),
            "predicted_pixels": int(predicted_pixels[i]),
        }
    summary = dict.fromkeys(SUMMARY_KEYS)
    if total:  # else all stay None: undefined without a single scored pixel
        summary["pixel_accuracy"] = float(true_positives.sum() / total)
        summary["mean_accuracy"] = float(accuracy[present].mean())
        summary["mean_iou"] = float(iou[present].mean())
        # score.py's nanmean: a class predicted but absent from the truth counts as IU 0
        in_either = present | (predicted_pixels > 0)
        summary["mean_iou_gt_or_predicted"] = float(
            np.where(present, iou, 0.0)[in_either].mean())
        summary["frequency_weighted_iou"] = float((gt_pixels[present] / total * iou[present]).sum())
    return {
        **summary,
        "conventions": MEAN_IOU_CONVENTIONS,
        "num_images": None if num_images is None else int(num_images),
        "classes_evaluated": [name for name, is_present in zip(names, present) if is_present],
        "per_class": per_class,
        "confusion_matrix": hist.tolist(),
    }


# the one-number scores of a confusion matrix (None without a scored pixel)
SUMMARY_KEYS = ("pixel_accuracy", "mean_accuracy", "mean_iou", "mean_iou_gt_or_predicted",
                "frequency_weighted_iou")
MEAN_IOU_CONVENTIONS = {
    "mean_iou": "mean over the classes present in the ground truth (the FCN paper's SIFT Flow "
                "numbers)",
    "mean_iou_gt_or_predicted": "mean over the classes present in the ground truth or the "
                                "prediction: a predicted but absent class counts as IU 0 "
                                "(np.nanmean in FCN's score.py)",
}


def _percent(value):
    return "n/a" if value is None else f"{100.0 * value:.2f}"


def format_table(metrics):
    """A readable report of :func:`compute_metrics`' result.

    One row per class present in the ground truth (name, ground-truth pixels,
    predicted pixels, accuracy %, IU %), then the four summary numbers in %,
    then the absent classes on one line (an absent class that was nevertheless
    predicted shows its predicted pixel count, since that is exactly where
    FCN's ``score.py`` mean IU differs from ours).

    Args:
      metrics: the dict returned by :func:`compute_metrics`.

    Returns:
      str, several lines, no trailing newline.
    """
    per_class = metrics["per_class"]
    present = metrics["classes_evaluated"]
    width = max([len("class")] + [len(name) for name in present])
    header = f"{'class':<{width}}  {'gt pixels':>12}  {'pred pixels':>12}  {'acc %':>7}  {'IU %':>7}"
    lines = [header, "-" * len(header)]
    for name in present:
        row = per_class[name]
        lines.append(f"{name:<{width}}  {row['gt_pixels']:>12,}  {row['predicted_pixels']:>12,}  "
                     f"{_percent(row['accuracy']):>7}  {_percent(row['iou']):>7}")
    lines.append("-" * len(header))
    images = metrics.get("num_images")
    if images is not None:
        lines.append(f"images evaluated        {images}")
    lines.append(f"classes evaluated       {len(present)} of {len(per_class)}")
    lines.append(f"pixel accuracy          {_percent(metrics['pixel_accuracy'])} %")
    lines.append(f"mean accuracy           {_percent(metrics['mean_accuracy'])} %")
    lines.append(f"mean IU                 {_percent(metrics['mean_iou'])} %   "
                 "(classes in the ground truth)")
    if "mean_iou_gt_or_predicted" in metrics:  # absent from results written before it existed
        lines.append(f"mean IU, score.py       {_percent(metrics['mean_iou_gt_or_predicted'])} %"
                     "   (classes in the ground truth or predicted)")
    lines.append(f"frequency weighted IU   {_percent(metrics['frequency_weighted_iou'])} %")
    absent = []
    for name, row in per_class.items():
        if row["gt_pixels"] == 0:
            predicted = row["predicted_pixels"]
            absent.append(f"{name} (predicted {predicted:,} px)" if predicted else name)
    if absent:
        lines.append("not in ground truth: " + ", ".join(absent))
    return "\n".join(lines)
