"""One training step, shared by single-process and distributed training.

``StepRunner.step(session, images, labels, ...)`` feeds one batch, runs the
train op with the loss, batch accuracy and learning rate, turns a failing op
into a one-line error, stops on a NaN/Inf loss, writes the image summaries
and prints the progress line with img/s and the share of time spent waiting
for data. The loops around it (train.py: budget, checkpoints, validation;
parallel/distributed.py: peers and timeouts) decide when to step.
"""
import collections
import math
import statistics
import time

import numpy as np
import tensorflow as tf

from fcn_tf1 import datasets, summaries
from fcn_tf1.errors import FcnError, TrainingDiverged, reason

SPEED_WINDOW = 20  # steps averaged in the img/s figure


def format_eta(seconds):
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class StepRunner:
    """Runs training steps of ``net`` (a graph.TrainingGraph) for ``run`` (run_setup.Run).

    Args:
      run: the Run (config, log).
      net: the TrainingGraph.
      writer: a summary FileWriter for the image summaries, or None.
      count_local: count the logging and image-summary intervals in this
        process's steps (a distributed replica, whose global step also moves
        with its peers) instead of the global step.
      where: words naming this process in a NaN report (e.g. "on worker:1").
      last_good: callable giving the words on the last good checkpoint.
      eta: optional callable(step, seconds per step) -> seconds left.
    """

    def __init__(self, run, net, writer=None, count_local=False, where="",
                 last_good=lambda: "the latest checkpoint is the last good one", eta=None):
        self.config, self.log, self.net, self.writer = run.config, run.log, net, writer
        self.palette = datasets.run_classes(run.config)[1]
        self.count_local, self.where, self.last_good, self.eta = count_local, where, last_good, eta
        self.local_steps = 0
        self.losses = []
        # (step seconds, data seconds) of recent steps, the warm-up step excluded
        self._window = collections.deque(maxlen=SPEED_WINDOW)

    def _count(self, step):
        return self.local_steps if self.count_local else step

    def step(self, session, images, labels, data_seconds, started, step=None, feed=None,
             options=None, summary=False):
        """Runs one step on a batch that took ``data_seconds`` to load, from ``started``
        (time.perf_counter() before loading).

        Args:
          step: the global step this update makes, or None to fetch it (a
            distributed replica cannot know it beforehand).
          feed: more feeds (e.g. the poly_time schedule's time fraction).
          options: tf.compat.v1.RunOptions (a distributed step's timeout);
            DeadlineExceededError passes through to the caller.
          summary: also fetch the merged scalar summaries (returned as
            ``out["summary"]``, for the caller's writer).

        Returns:
          dict of fetched values: ``loss``, ``total``, ``acc``, ``lr``, ``step``.
        """
        config, net = self.config, self.net
        fetches = {"train": net.train_op, "loss": net.data_loss, "total": net.total_loss,
                   "acc": net.pixel_accuracy, "lr": net.learning_rate}
        if step is None:
            fetches["step"] = net.global_step
        if summary:
            fetches["summary"] = net.summary_op
        every = config.image_summary_every_steps
        # a distributed replica does not know its global step before the step
        upcoming = self.local_steps + 1 if self.count_local else step
        want_images = bool(self.writer is not None and every and upcoming % every == 0)
        if want_images:
            fetches["predictions"] = net.predictions
        try:
            out = session.run(fetches, {net.images: images, net.labels: labels,
                                        net.is_training: True, **(feed or {})},
                              options=options)
        except tf.errors.InvalidArgumentError as err:  # e.g. the loss's label assertion
            failed = step if step is not None else self.local_steps + 1
            raise FcnError(f"{config.data}: training step {failed} failed: "
                           f"{reason(err)}") from None
        except tf.errors.ResourceExhaustedError as err:  # a GPU's memory, most often
            raise FcnError(f"training step {self.local_steps + 1}: out of memory "
                           f"({reason(err, 200)}); lower --batch-size or --crop-size") from None
        out["step"] = int(out["step"]) if step is None else step
        if not (math.isfinite(out["loss"]) and math.isfinite(out["total"])):
            raise TrainingDiverged(
                f"loss is {out['loss']} (total {out['total']}){self.where} at step "
                f"{out['step']}: training stopped without saving; {self.last_good()}. "
                "Lower the learning rate or check the data")
        self.local_steps += 1
        self.losses.append(float(out["loss"]))
        if self.local_steps > 1:  # the first step builds and tunes kernels: not typical
            self._window.append((time.perf_counter() - started, data_seconds))
        if want_images:
            self.writer.add_summary(summaries.image_summary(
                summaries.PICTURES_TAG, images[0], labels[0], out["predictions"][0],
                self.palette),
                out["step"])
        self._maybe_log(out)
        return out

    def _maybe_log(self, out):
        config, step = self.config, out["step"]
        if not config.log_every_steps:
            return
        if not (self.local_steps == 1 or self._count(step) % config.log_every_steps == 0
                or step == config.max_steps):
            return
        if self._window:
            step_s = float(np.mean([w[0] for w in self._window]))
            data_s = float(np.mean([w[1] for w in self._window]))
            speed = (f"{config.batch_size / step_s:.1f} img/s  data "
                     f"{100 * data_s / step_s:.0f}%")
            if self.eta is not None:
                speed += f"  eta {format_eta(self.eta(step, step_s))}"
        else:
            speed = "(warm-up step)"
        local = f"  (local step {self.local_steps})" if self.count_local else ""
        self.log(f"step {step}/{config.max_steps}  loss {out['loss']:.4f}  "
                 f"acc {out['acc']:.3f}  lr {out['lr']:.2e}  {speed}{local}")

    def typical_step_seconds(self):
        """The median step time of the recent steps (0 before the second step)."""
        return statistics.median(w[0] for w in self._window) if self._window else 0.0

    def images_per_second(self):
        """This process's img/s over the recent steps, or None before the second step."""
        if not self._window:
            return None
        return self.config.batch_size / float(np.mean([w[0] for w in self._window]))
