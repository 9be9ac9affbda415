"""The learning curve of a run as a PNG: validation metrics against training minutes."""
import textwrap

from fcn_tf1 import rundir
from fcn_tf1.errors import FcnError


def plot_curve(points, path, title=""):
    """Validation pixel accuracy, mean accuracy and mean IU (%) against minutes, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")  # no display needed
    from matplotlib import pyplot as plt

    points = sorted(points, key=lambda p: p["minutes"])
    minutes = [p["minutes"] for p in points]
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=100)
    for key, label, style in (("pixel_accuracy", "pixel accuracy", "o-"),
                              ("mean_accuracy", "mean class accuracy", "s-"),
                              ("mean_iou", "mean IU", "^-")):
        axes.plot(minutes, [100 * p[key] for p in points], style, label=label, markersize=4)
    if points:
        last = points[-1]
        axes.annotate(f"{100 * last['pixel_accuracy']:.2f}%", (minutes[-1],
                      100 * last["pixel_accuracy"]), textcoords="offset points", xytext=(4, 4))
        axes.annotate(f"{100 * last['mean_iou']:.2f}%", (minutes[-1], 100 * last["mean_iou"]),
                      textcoords="offset points", xytext=(4, -10))
    axes.set_xlabel("training wall-clock minutes")
    axes.set_ylabel("validation %")
    axes.set_ylim(0, 100)
    axes.set_xlim(0, 1.15 * max(minutes) if minutes else 1)  # room for the end labels
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize=9)  # the curves stay below ~90 %
    if title:  # wrapped: a long run description would be cut at the figure's edge
        axes.set_title(textwrap.fill(title, 85), fontsize=10)
    figure.tight_layout()
    try:
        rundir.atomic_write(path, lambda f: figure.savefig(f, format="png"))
    except OSError as err:
        raise FcnError(f"{path}: cannot write the learning curve ({err.strerror or err})") from None
    finally:
        plt.close(figure)
