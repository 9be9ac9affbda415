"""A run's training clock and its validation record, kept in ``progress.json``.

A run's clock counts the seconds spent in training (steps, checkpoint saves
and the periodic validation passes) across restarts: every checkpoint records
the elapsed seconds at its step, and a resumed run starts its clock from the
checkpoint it restored, so the steps redone after a crash are counted once.
That clock drives ``--max-minutes`` and the x axis of the learning curve:
every validation result is recorded with its minutes, and the curve
(learning_curve.plot_curve) is redrawn as ``learning_curve.png``.
"""
import json
import pathlib
import time

from fcn_tf1 import learning_curve, rundir
from fcn_tf1.errors import FcnError, reason

PROGRESS_NAME = "progress.json"
CURVE_PNG = "learning_curve.png"
CURVE_KEYS = ("pixel_accuracy", "mean_accuracy", "mean_iou", "frequency_weighted_iou")


class RunClock:
    """The clock and the learning curve of the run in ``train_dir`` at ``step``."""

    def __init__(self, train_dir, step):
        self.train_dir = pathlib.Path(train_dir)
        self.path = self.train_dir / PROGRESS_NAME
        saved = _load(self.path)
        # a resumed run continues from its checkpoint: later records belong to lost steps
        self.checkpoints = {s: t for s, t in saved["checkpoints"].items() if s <= step}
        self.points = [p for p in saved["points"] if p["step"] <= step]
        self.base_seconds = self.checkpoints[max(self.checkpoints)] if self.checkpoints else 0.0
        self._started = time.monotonic()

    def seconds(self):
        """Training seconds of the run so far (earlier sessions included)."""
        return self.base_seconds + time.monotonic() - self._started

    def out_of_time(self, max_minutes):
        return bool(max_minutes) and self.seconds() >= 60.0 * max_minutes

    def checkpoint_saved(self, step):
        self.checkpoints[step] = self.seconds()
        self._write()

    def validated(self, step, result, title=""):
        """Adds a validation result to the curve; rewrites the JSON and the PNG."""
        point = {"step": int(step), "minutes": round(self.seconds() / 60.0, 3)}
        point.update({key: float(result[key]) for key in CURVE_KEYS})
        self.points = [p for p in self.points if p["step"] != step] + [point]
        self._write()
        learning_curve.plot_curve(self.points, self.train_dir / CURVE_PNG, title)

    def _write(self):
        rundir.write_json(self.path, {
            "checkpoints": {str(s): round(t, 3) for s, t in sorted(self.checkpoints.items())},
            "points": self.points})


def _load(path):
    if not path.is_file():
        return {"checkpoints": {}, "points": []}
    try:
        data = json.loads(path.read_text())
        checkpoints = {int(s): float(t) for s, t in data["checkpoints"].items()}
        points = [dict(p, step=int(p["step"]), minutes=float(p["minutes"]))
                  for p in data["points"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise FcnError(f"{path}: unreadable progress file ({reason(err, 200)}); "
                       "move it away to start the clock and the curve afresh") from None
    return {"checkpoints": checkpoints, "points": points}
