"""Named training recipes: ``python run_train.py --preset NAME --data-dir ROOT``.

A preset is a set of training options, applied where the command line does
not give them (an option given explicitly wins). The SIFT Flow presets are
tuned for the full trainval split on a 2-vCPU cloud VM without GPU; such
hosts differ in speed by up to 4-5x (9-13 img/s on older ones, 45-52 on an
AMD EPYC with AVX-512). So they train for a time, not a number of steps: the
poly decay runs over the ``max_minutes`` budget (``lr_schedule`` poly_time)
and ``max_steps`` is only a cap; on the slower hosts that measured the same
as a 5000-step poly schedule, on the faster one it is 4x the steps. Their
measured results are in the README; every run behind them is in
docs/EXPERIMENTS.md.
"""
from fcn_tf1.errors import ConfigError

_SIFTFLOW_CPU = {
    "variant": "fcn8s", "backbone": "compact", "width": 32,
    "batch_size": 8, "crop_size": None, "input_scale": 0.5, "scale_jitter": None, "flip": True,
    "optimizer": "adam", "lr_schedule": "poly_time", "poly_power": 0.9,
    "weight_decay": 1e-4,
    "max_steps": 100000, "max_minutes": 60.0, "repeat_factor_threshold": 0.1,
    "eval_every_steps": 1000, "save_every_steps": 500, "image_summary_every_steps": 500,
    "log_every_steps": 50,
}


def _siftflow_cpu(learning_rate, class_weighting, loss_words="", **more):
    what = ("compact FCN-8s width 32 on whole images at half resolution (input scale 0.5, flip, "
            "no scale jitter), batches of 8 drawn with repeat factor sampling 0.1, Adam "
            f"{learning_rate:g} with the poly decay over a 60-minute budget (as many steps as "
            f"fit, at most 100000){loss_words}")
    return dict(_SIFTFLOW_CPU, learning_rate=learning_rate, class_weighting=class_weighting,
                description=what, dataset="siftflow", **more)


_CAMVID_CPU = dict(_SIFTFLOW_CPU, scale_jitter=(0.75, 1.5), eval_every_steps=500)


def _camvid_cpu(class_weighting, loss_words=""):
    what = ("CamVid (11 classes, 480x360; train list, validated on the val list): compact "
            "FCN-8s width 32 on whole images at half resolution with scale jitter 0.75-1.5 and "
            "flip, batches of 8 drawn with repeat factor sampling 0.1, Adam 5e-4 with the poly "
            f"decay over a 60-minute budget{loss_words}")
    return dict(_CAMVID_CPU, learning_rate=5e-4, class_weighting=class_weighting,
                description=what, dataset="camvid")


PRESETS = {
    # Runs are named by their id in docs/EXPERIMENTS.md.
    # Adam 5e-4: run S (82.20 / 26.24 % pixel / mean IU) against J at 1e-3 (81.79 / 25.64);
    # the balanced preset keeps 1e-3, the rate of its measured run K. Repeat factor
    # sampling 0.1: run W 83.72 / 30.80 against U without it 83.03 / 29.87 (60 min each).
    # The moving average and the prior correction of the best validation mean IU (0.3 on
    # fcn8s-ema-1core, -s1 and -s2): +2.26 / +0.92 / +0.90 mean IU, -0.56 / -0.74 / -1.05
    # pixel accuracy against the same runs' raw weights without correction
    # The Lovasz-softmax term (weight 1), lovasz1-1core-s1 and -s2 against fcn8s-ema-1core-s1
    # and -s2 (each with its chosen correction): +0.71 / +1.41 mean IU, -0.18 / -0.07 pixel
    # accuracy; both cores, siftflow-cpu-60min-lovasz against -meaniou: +0.51 mean IU, +0.65 pixel
    "siftflow-cpu-60min": _siftflow_cpu(
        5e-4, "none", ", the Lovasz-softmax loss added to the cross entropy, a moving average "
        "of the weights (decay 0.999), and predictions corrected by the class priors, the "
        "correction of the best validation mean IU chosen at the end", lovasz_weight=1.0,
        ema_decay=0.999, prior_correction_choice="mean_iou"),
    # The prior correction is chosen when the run ends (the largest keeping 79 % validation
    # pixel accuracy): the constant 0.6, chosen on run V (21,000 steps), gave 72.80 % pixel
    # accuracy on floor-ema-balanced-1core (11,457 steps), where the floor kept 79.20 / 48.88
    # (pixel / mean accuracy); on both cores it chose 0.5: 79.29 / 49.34 (run
    # siftflow-cpu-60min-balanced-floor). Validation passes during training still use 0.6.
    # The moving average of the weights: +1.05 to +1.26 mean accuracy, +0.32 to +0.47 mean IU
    # against the same runs' raw weights. No Lovasz term: balanced-lovasz1-1core-s1/-s2 against
    # balanced-base-1core-s1/-s2, +0.32 / -0.03 mean IU, -0.17 / -0.36 mean accuracy.
    "siftflow-cpu-60min-balanced": _siftflow_cpu(
        1e-3, "median_frequency",
        ", with the class-balanced (median frequency) loss, a moving average of the weights "
        "(decay 0.999), and predictions corrected by the class priors, the correction chosen "
        "at the end as the largest keeping 79 % validation pixel accuracy",
        prior_correction=0.6, prior_correction_floor=0.79, ema_decay=0.999),
    "camvid-cpu-60min": _camvid_cpu("none"),
    "camvid-cpu-60min-balanced": _camvid_cpu(
        "median_frequency", ", with the class-balanced (median frequency) loss"),
}
DATA_HINTS = {"siftflow": "the full SIFT Flow: pass --data-dir ROOT (e.g. ../shared/siftflow)",
              "camvid": "CamVid: pass --data-dir ROOT (e.g. ../shared/camvid)"}


def describe():
    """One line per preset, for --help (argparse help text: a literal % is written %%)."""
    return "; ".join(f"{name}: {preset['description']}".replace("%", "%%")
                     for name, preset in PRESETS.items())


def options(name):
    """The RunConfig fields preset ``name`` sets."""
    if name not in PRESETS:
        raise ConfigError(f"--preset {name}: unknown preset; choose one of {', '.join(PRESETS)}")
    return {key: value for key, value in PRESETS[name].items()
            if key not in ("description", "dataset")}


def data_hint(name):
    """Which data preset ``name`` is a recipe for, as advice."""
    return DATA_HINTS[PRESETS[name]["dataset"]]
