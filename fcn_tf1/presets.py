"""Named training recipes: ``python run_train.py --preset NAME --data-dir ROOT``.

A preset is a set of training options, applied where the command line does
not give them (an option given explicitly wins). The SIFT Flow presets are
tuned for the full trainval split on this project's 2-core CPU machine: a
fixed number of steps about the size of the time budget there, and
``max_minutes`` as a hard stop (the run then stops, saves and is evaluated as
usual; here it stops 0-500 steps before the schedule ends, which measured
no different from a finished schedule: README, runs L and M). Their measured
results are in the README.
"""
from fcn_tf1.errors import ConfigError

_SIFTFLOW_CPU = {
    "variant": "fcn8s", "backbone": "compact", "width": 32,
    "batch_size": 8, "crop_size": None, "input_scale": 0.5, "scale_jitter": None, "flip": True,
    "optimizer": "adam", "lr_schedule": "poly", "poly_power": 0.9,
    "weight_decay": 1e-4,
    "max_steps": 5000, "max_minutes": 60.0,
    "eval_every_steps": 1000, "save_every_steps": 500, "image_summary_every_steps": 500,
    "log_every_steps": 50,
}


def _siftflow_cpu(learning_rate, class_weighting, loss_words=""):
    what = ("compact FCN-8s width 32 on whole images at half resolution (input scale 0.5, flip, "
            f"no scale jitter), Adam {learning_rate:g} poly, 5000 steps of 8 images, at most "
            f"60 minutes{loss_words}")
    return dict(_SIFTFLOW_CPU, learning_rate=learning_rate, class_weighting=class_weighting,
                description=what)


PRESETS = {
    # Adam 5e-4: run S (82.20 / 26.24 % pixel / mean IU) against J at 1e-3 (81.79 / 25.64);
    # the balanced preset keeps 1e-3, the rate of its measured run K
    "siftflow-cpu-60min": _siftflow_cpu(5e-4, "none"),
    "siftflow-cpu-60min-balanced": _siftflow_cpu(
        1e-3, "median_frequency", ", with the class-balanced (median frequency) loss"),
}


def describe():
    """One line per preset, for --help."""
    return "; ".join(f"{name}: {preset['description']}" for name, preset in PRESETS.items())


def options(name):
    """The RunConfig fields preset ``name`` sets."""
    if name not in PRESETS:
        raise ConfigError(f"--preset {name}: unknown preset; choose one of {', '.join(PRESETS)}")
    return {key: value for key, value in PRESETS[name].items() if key != "description"}
