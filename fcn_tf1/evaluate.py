"""Evaluation: full-resolution inference over an HDF5 split into a confusion matrix.

``evaluate_in_session`` runs inside an open Session (the training loop's
validation pass uses it); the FCN metrics come from ``fcn_tf1.metrics``.
"""
import time

from fcn_tf1 import batches, metrics


def evaluate_in_session(session, net, data_path, indices, batch_size, num_classes, void_label,
                        class_names, should_stop=None, on_batch=None):
    """Streams ``indices`` of ``data_path`` through ``net`` and scores the predictions.

    Args:
      session: a tf.compat.v1.Session holding trained variables.
      net: an InferenceGraph (``images`` placeholder, ``predictions`` tensor).
      data_path: HDF5 file from ``fcn-tf1 prepare``.
      indices: image indices to evaluate (full 256x256 images, no augmentation).
      batch_size: images per forward pass.
      num_classes, void_label, class_names: the label space.
      should_stop: optional callable; when it returns True the pass stops early
        and the result covers the images seen so far.
      on_batch: optional callable(images uint8-range float32 [B,H,W,3], labels
        int64 [B,H,W], predictions [B,H,W], names) for side outputs (PNGs).

    Returns:
      dict of ``metrics.compute_metrics`` plus ``seconds`` (wall time) and
      ``forward_seconds`` (time inside session.run).
    """
    confusion = metrics.ConfusionMatrix(num_classes=num_classes, void_label=void_label)
    seen = 0
    forward_seconds = 0.0
    start = time.perf_counter()
    for images, labels, names in batches.iterate_batches(data_path, indices, batch_size):
        t0 = time.perf_counter()
        predictions = session.run(net.predictions, {net.images: images})
        forward_seconds += time.perf_counter() - t0
        confusion.update(labels, predictions)
        seen += len(names)
        if on_batch is not None:
            on_batch(images, labels, predictions, names)
        if should_stop is not None and should_stop():
            break
    result = metrics.compute_metrics(confusion.matrix, class_names, num_images=seen)
    result["seconds"] = time.perf_counter() - start
    result["forward_seconds"] = forward_seconds
    return result
