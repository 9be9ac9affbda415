"""TensorBoard summaries built in Python (tf.compat.v1.Summary protos).

Scalars computed outside the graph (validation metrics) and the coloured
input / ground truth / prediction picture go to the same FileWriter as the
in-graph ``tf.compat.v1.summary`` scalars.
"""
import io

import numpy as np
import tensorflow as tf
from PIL import Image

from fcn_tf1 import visualize

tf1 = tf.compat.v1


def scalar_summary(values):
    """A Summary of {tag: float}; None values are skipped."""
    return tf1.Summary(value=[tf1.Summary.Value(tag=tag, simple_value=float(value))
                              for tag, value in values.items() if value is not None])


def image_summary(tag, image, label, prediction):
    """A Summary holding one PNG: input | ground truth | prediction, coloured.

    Args:
      image: float32 or uint8 [H, W, 3], RGB 0..255.
      label: int [H, W], 0..C-1 or void.
      prediction: int [H, W], 0..C-1.
    """
    picture = visualize.triptych(np.clip(image, 0, 255).astype(np.uint8), label, prediction)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    height, width = picture.shape[:2]
    return tf1.Summary(value=[tf1.Summary.Value(tag=tag, image=tf1.Summary.Image(
        height=height, width=width, colorspace=3, encoded_image_string=buffer.getvalue()))])
