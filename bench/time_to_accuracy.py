"""Minutes of training until a run's validation first reaches a pixel accuracy and a mean IU.

    crossing(points, pixel, mean_iou) -> point or None
    summarize(train_dir, pixel, mean_iou) -> dict
    compare(train_dirs, pixel, mean_iou) -> dict        (the first run is the reference)
    python -m bench.time_to_accuracy RUN [RUN ...] [--pixel 80] [--mean-iou 25] [--out FILE]

A figure of runs that already trained: it reads each run's ``progress.json``
(fcn_tf1.run_clock: every validation result with the training minutes at
that step, the minutes of the periodic validation passes and checkpoint
saves included, across restarts) and its ``config.json``. The crossing is the
first validation point with both figures at or above the thresholds; its
resolution is the run's ``--eval-every-steps``, so validate often (e.g. every
500 steps) when the crossing is what is measured. Runs compared this way must
run back to back on one host: hosts of one machine kind differ up to 2x in
speed. The throughput reported (``img_per_s``) is images per training-clock
second up to the run's last checkpoint, validation included, so it is a
little below the img/s of the training log lines.
"""
import argparse
import json
import pathlib
import sys

from fcn_tf1 import config as config_lib, rundir
from fcn_tf1.errors import FcnError
from fcn_tf1.run_clock import PROGRESS_NAME

DEFAULT_PIXEL, DEFAULT_MEAN_IOU = 80.0, 25.0


def crossing(points, pixel, mean_iou):
    """The first point (by step) whose pixel accuracy and mean IU reach ``pixel`` / ``mean_iou``
    (percent), or None."""
    for point in sorted(points, key=lambda p: p["step"]):
        if 100 * point["pixel_accuracy"] >= pixel and 100 * point["mean_iou"] >= mean_iou:
            return point
    return None


def _percent(point):
    if point is None:
        return None
    return {"step": point["step"], "minutes": point["minutes"],
            "pixel_accuracy": round(100 * point["pixel_accuracy"], 2),
            "mean_iou": round(100 * point["mean_iou"], 2)}


def summarize(train_dir, pixel=DEFAULT_PIXEL, mean_iou=DEFAULT_MEAN_IOU):
    """The crossing of one run, its best and last validation points, and its throughput."""
    train_dir = pathlib.Path(train_dir)
    path = train_dir / PROGRESS_NAME
    if not path.is_file():
        raise FcnError(f"{train_dir}: no {PROGRESS_NAME} (not a training directory of fcn_tf1, "
                       "or it has not validated yet)")
    try:
        progress = json.loads(path.read_text())
        points, checkpoints = progress["points"], progress["checkpoints"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FcnError(f"{path}: not a run's progress record ({err})") from None
    if not points:
        raise FcnError(f"{path}: no validation point yet")
    config = config_lib.load(train_dir)
    last_step = max(int(s) for s in checkpoints) if checkpoints else 0
    seconds = checkpoints.get(str(last_step), 0.0)
    best = max(points, key=lambda p: (p["mean_iou"], p["pixel_accuracy"]))
    return {"run": str(train_dir), "precision": config.precision,
            "batch_size": config.batch_size, "max_minutes": config.max_minutes,
            "eval_every_steps": config.eval_every_steps,
            "img_per_s": config.batch_size * last_step / seconds if seconds else None,
            "trained_minutes": round(seconds / 60.0, 2), "steps": last_step,
            "crossing": _percent(crossing(points, pixel, mean_iou)),
            "best": _percent(best), "last": _percent(max(points, key=lambda p: p["step"]))}


def compare(train_dirs, pixel=DEFAULT_PIXEL, mean_iou=DEFAULT_MEAN_IOU):
    """Every run's summary; ``minutes_ratio`` = each run's crossing minutes / the first run's
    (None where either run did not cross)."""
    runs = [summarize(d, pixel, mean_iou) for d in train_dirs]
    reference = runs[0]["crossing"]
    for run in runs:
        crossed = run["crossing"]
        run["minutes_ratio"] = (crossed["minutes"] / reference["minutes"]
                                if crossed and reference else None)
    return {"thresholds": {"pixel_accuracy": pixel, "mean_iou": mean_iou},
            "reference": runs[0]["run"], "runs": runs}


def format_compare(result):
    """One line per run."""
    lines = [f"first validation with pixel accuracy >= {result['thresholds']['pixel_accuracy']}"
             f" % and mean IU >= {result['thresholds']['mean_iou']} %:"]
    for run in result["runs"]:
        speed = f"{run['img_per_s']:.1f} img/s" if run["img_per_s"] else "img/s unknown"
        crossed = run["crossing"]
        if crossed:
            what = (f"{crossed['minutes']:.1f} min (step {crossed['step']}: "
                    f"{crossed['pixel_accuracy']:.2f} / {crossed['mean_iou']:.2f})")
            if run["minutes_ratio"] is not None:
                what += f", {run['minutes_ratio']:.2f} of the reference's minutes"
        else:
            best = run["best"]
            what = (f"not reached in {run['trained_minutes']:.1f} min (best: step {best['step']},"
                    f" {best['minutes']:.1f} min, {best['pixel_accuracy']:.2f} / "
                    f"{best['mean_iou']:.2f})")
        lines.append(f"  {run['run']} ({run['precision']}, {speed}): {what}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="train dirs; the first is the reference of minutes_ratio")
    parser.add_argument("--pixel", type=float, default=DEFAULT_PIXEL,
                        help="pixel accuracy threshold, percent (default %(default)s)")
    parser.add_argument("--mean-iou", type=float, default=DEFAULT_MEAN_IOU,
                        help="mean IU threshold, percent (default %(default)s)")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="also write the result as JSON")
    args = parser.parse_args(argv)
    try:
        result = compare(args.runs, args.pixel, args.mean_iou)
    except FcnError as err:
        print(f"time_to_accuracy: error: {err}", file=sys.stderr)
        return 2
    print(format_compare(result))
    if args.out:
        rundir.write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
