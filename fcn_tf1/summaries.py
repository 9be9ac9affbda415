"""TensorBoard summaries built in Python (tf.compat.v1.Summary protos), and where they go.

A run writes two TensorBoard runs side by side, ``TRAIN_DIR/train`` and
``TRAIN_DIR/validation``, with the same tag names where the quantity is the
same (``metrics/pixel_accuracy``: the training batches' and the validation
images'), so ``tensorboard --logdir runs`` overlays the two curves. Training
adds the losses and the learning rate; validation adds mean class accuracy,
both mean IU conventions, frequency-weighted IU, per-class IU, a few input |
ground truth | prediction pictures and the confusion matrix as an image.
"""
import io

import numpy as np
import tensorflow as tf
from PIL import Image

from fcn_tf1 import visualize

tf1 = tf.compat.v1
TRAIN_LOGDIR = "train"
VALIDATION_LOGDIR = "validation"
PICTURES_TAG = "images/input_truth_prediction"
VALIDATION_SCALARS = ("pixel_accuracy", "mean_accuracy", "mean_iou", "mean_iou_gt_or_predicted",
                      "frequency_weighted_iou")


def scalar_summary(values):
    """A Summary of {tag: float}; None values are skipped."""
    return tf1.Summary(value=[tf1.Summary.Value(tag=tag, simple_value=float(value))
                              for tag, value in values.items() if value is not None])


def picture_summary(tag, picture):
    """A Summary holding one uint8 RGB picture [H, W, 3] as a PNG."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    height, width = picture.shape[:2]
    return tf1.Summary(value=[tf1.Summary.Value(tag=tag, image=tf1.Summary.Image(
        height=height, width=width, colorspace=3, encoded_image_string=buffer.getvalue()))])


def image_summary(tag, image, label, prediction, palette):
    """A Summary holding one PNG: input | ground truth | prediction, coloured.

    Args:
      image: float32 or uint8 [H, W, 3], RGB 0..255.
      label: int [H, W], 0..C-1 or void.
      prediction: int [H, W], 0..C-1.
      palette: uint8 [C, 3], the class colours.
    """
    return picture_summary(tag, visualize.triptych(np.clip(image, 0, 255).astype(np.uint8),
                                                   label, prediction, palette=palette))


def confusion_picture(matrix, cell=8):
    """The confusion matrix as a picture: rows (ground truth) normalised, white = 0, dark
    blue = 1, each cell ``cell`` pixels; a class absent from the truth is a grey row."""
    matrix = np.asarray(matrix, np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    white, blue = np.array([255.0, 255.0, 255.0]), np.array([8.0, 48.0, 107.0])
    picture = white + share[..., None] * (blue - white)
    picture[totals[:, 0] == 0] = 200.0
    picture = np.kron(picture, np.ones((cell, cell, 1)))
    return picture.round().astype(np.uint8)


def validation_summaries(result, pictures=()):
    """The Summaries of one validation pass: its scalars, per-class IU, pictures and the
    confusion matrix (``result`` from metrics.compute_metrics; ``pictures`` uint8 RGB)."""
    scalars = {f"metrics/{key}": result.get(key) for key in VALIDATION_SCALARS}
    scalars.update({f"per_class_iou/{name}": row["iou"]
                    for name, row in result["per_class"].items()})
    out = [scalar_summary(scalars),
           picture_summary("confusion_matrix", confusion_picture(result["confusion_matrix"]))]
    out += [picture_summary(f"{PICTURES_TAG}/{i}", picture) for i, picture in enumerate(pictures)]
    return out
