"""The run config: one immutable object, built once, saved as config.json.

``RunConfig`` holds everything needed to rebuild the graph and to continue a
run exactly (model, loss, data order, optimizer, schedule). The training loop
writes it to ``TRAIN_DIR/config.json`` before the first step; ``eval``,
``predict`` and ``export`` rebuild the graph from it, and a resumed run is
checked against it (:func:`merge_for_resume`).

config.json is parsed with ``json`` and validated field by field: unknown keys,
wrong types or values outside the allowed sets are a ``ConfigError`` naming
the file, never ``eval``.
"""
import dataclasses
import json
import math
import pathlib
from typing import Optional, Tuple

from fcn_tf1 import paths
from fcn_tf1.errors import ConfigError
from fcn_tf1.rundir import write_json

CONFIG_NAME = "config.json"

VARIANTS = ("fcn8s", "fcn16s", "fcn32s", "fcn4s")
BACKBONES = ("compact", "vgg_bn", "vgg16")
LOSS_VARIANTS = ("reshape", "reshape_free")
OPTIMIZERS = ("momentum", "adam")
PRECISIONS = ("fp32", "bf16")
SCHEDULES = ("poly", "poly_time", "step", "constant")
CLASS_WEIGHTINGS = ("none", "median_frequency", "sqrt_median_frequency",
                    "median_frequency_global")
# which prior correction a run chooses at its end (prior_choice.choose)
PRIOR_CHOICES = ("largest", "mean_iou")
MIN_INPUT_SCALE, MAX_INPUT_SCALE = 0.1, 4.0  # model.inference checks the same range
MAX_INT = 2**31  # every integer setting must fit an int32 graph constant
MAX_PRIOR_CORRECTION = 10.0  # beyond 1 the correction over-favours rare classes
# The Lovasz term of a training loss sees every 8th row and column (1/64 of the pixels:
# sorting all costs more than the network). The logits it samples are a bilinear
# upsampling of a score map at 1/8 of the network's input, so at input scale 0.5 every
# score cell still gives it 2 x 2 samples.
LOVASZ_STRIDE = 8

# Fields a resumed run may change: they do not alter the graph, the variables,
# or the data order, so the checkpoint stays valid and the run stays exact.
RESUME_OVERRIDABLE = frozenset({
    "max_steps", "max_minutes", "save_every_steps", "save_every_secs", "max_to_keep",
    "eval_every_steps", "summary_every_steps", "image_summary_every_steps",
    "log_every_steps", "num_prediction_pngs", "data", "vgg16_weights", "prior_correction",
    "allow_other_data", "init_from", "keep_best", "precision", "prior_correction_floor",
    "prior_correction_choice",
})
KEEP_BEST = ("mean_iou", "mean_iou_gt_or_predicted", "pixel_accuracy", "mean_accuracy",
             "frequency_weighted_iou", "none")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; saved as config.json next to the checkpoints.

    Model: ``num_classes``, ``variant`` (fcn8s/16s/32s/4s), ``backbone``
    (compact/vgg_bn/vgg16), ``width`` (their width multiplier), ``vgg16_weights``
    (optional Keras VGG16 HDF5 file to start from), ``dropout`` (rate after
    fc6/fc7 in training; None = the backbone's default, 0.3 compact, 0.5 vgg16),
    ``input_scale`` (the net runs on images resampled by this factor, its
    logits are upsampled back: 0.5 sees a 256x256 image at 128x128).
    Loss: ``loss_variant`` (reshape / reshape_free), ``void_label``,
    ``class_weighting`` and the resulting ``class_weights`` (stored, so a
    resumed run uses exactly the same weights), ``lovasz_weight`` (> 0: the
    Lovasz-softmax loss, a surrogate of mean IU, added with this weight to
    the cross entropy; losses.lovasz_softmax).
    Prediction: ``prior_correction`` (tau in [0, 10]; 0 = none): the predicted
    class is argmax(logits - tau * log(class_priors)), post-hoc logit
    adjustment toward mean class accuracy (losses.prior_offsets); the loss
    always sees the raw logits; validation, the logged batch accuracy, eval,
    predict and export take the corrected argmax. ``class_priors`` are the
    training pixel frequencies, computed when the run starts with tau > 0
    and stored.
    Data: ``data`` (HDF5 from ``fcn-tf1 prepare``), ``val_fraction``,
    ``batch_size``, ``crop_size`` (None = full images), ``flip``,
    ``scale_jitter`` ((min, max) or None), ``repeat_factor_threshold`` (0:
    every image once per epoch; t in (0, 1]: oversample the images that show
    classes found in fewer than a fraction t of the training images,
    batches.repeat_factors), ``seed``.
    Optimisation: ``optimizer``, ``learning_rate``, ``momentum``,
    ``lr_schedule`` (poly: lr*(1-step/max_steps)^poly_power; poly_time: the
    same over the time budget, lr*(1-minutes/max_minutes)^poly_power with the
    training minutes of run_clock.RunClock, so the decay ends with the budget
    whatever the machine's speed; max_steps is then only a cap, and the rates
    depend on the wall clock, so such a run is not exactly repeatable; step:
    lr*step_gamma^floor(step/step_size); constant), ``weight_decay``,
    ``max_steps``, ``max_minutes`` (a wall-clock budget for training, counted
    across restarts by run_clock.RunClock; 0 = none).
    Bookkeeping: checkpoint, summary, evaluation and logging intervals.
    ``data_fingerprint`` (h5data.fingerprint of ``data``, stored when the run
    starts or resumes; None in config.json files written before it existed): a
    resumed run on a data file with another fingerprint is refused unless
    ``allow_other_data`` (an override for that one start; saved as false).
    """
    # model
    num_classes: int = 33
    # the class set, taken from the data file when the run starts (None: a run of the
    # SIFT Flow classes written before data files carried them)
    class_names: Optional[Tuple[str, ...]] = None
    class_colors: Optional[Tuple[Tuple[int, int, int], ...]] = None
    variant: str = "fcn8s"
    backbone: str = "compact"
    width: int = 16
    vgg16_weights: Optional[str] = None
    init_from: Optional[str] = None  # a run dir or checkpoint the new run starts from
    keep_best: str = "mean_iou"  # validation metric of the kept best checkpoint, or "none"
    dropout: Optional[float] = None
    input_scale: float = 1.0
    # loss
    loss_variant: str = "reshape"
    void_label: int = 255
    class_weighting: str = "none"
    class_weights: Optional[Tuple[float, ...]] = None
    lovasz_weight: float = 0.0  # > 0: the data loss adds this times the Lovasz-softmax loss
    # prediction
    prior_correction: float = 0.0
    # > 0: the end of training chooses prior_correction keeping this pixel accuracy, the
    # largest or the one of best mean IU (prior_correction_choice; prior_choice.py)
    prior_correction_floor: float = 0.0
    prior_correction_choice: str = "largest"  # "mean_iou" chooses even without a floor
    class_priors: Optional[Tuple[float, ...]] = None
    # data
    data: str = str(paths.DEFAULT_DATA)  # the embedded sample
    data_fingerprint: Optional[str] = None
    allow_other_data: bool = False
    val_fraction: float = 0.1
    batch_size: int = 8
    crop_size: Optional[int] = 128
    flip: bool = True
    scale_jitter: Optional[Tuple[float, float]] = None
    repeat_factor_threshold: float = 0.0
    seed: int = 0
    # optimisation
    optimizer: str = "momentum"
    learning_rate: float = 0.01
    momentum: float = 0.9
    lr_schedule: str = "poly"
    poly_power: float = 0.9
    step_size: int = 1000
    step_gamma: float = 0.1
    weight_decay: float = 5e-4
    max_steps: int = 500  # python run_train.py: about 2-3 minutes on 2 CPU cores
    max_minutes: float = 0.0
    ema_decay: float = 0.0  # > 0: an exponential moving average of the weights (averaging.py)
    precision: str = "fp32"  # bf16: oneDNN's automatic mixed precision rewrite (CPU)
    # bookkeeping
    save_every_steps: int = 100
    save_every_secs: float = 600.0
    max_to_keep: int = 5
    eval_every_steps: int = 0
    summary_every_steps: int = 10
    image_summary_every_steps: int = 100
    log_every_steps: int = 10
    num_prediction_pngs: int = 4

    def __post_init__(self):
        problems = _problems(self)
        if problems:
            raise ConfigError("invalid config: " + "; ".join(problems))

    def to_dict(self):
        return dataclasses.asdict(self)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @property
    def chooses_prior_correction(self):
        """True when the end of training chooses prior_correction (prior_choice.py)."""
        return bool(self.prior_correction_floor) or self.prior_correction_choice == "mean_iou"


def _problems(cfg):
    """Human-readable reasons why ``cfg`` cannot be used (empty when fine)."""
    out = []

    def choice(name, allowed):
        if getattr(cfg, name) not in allowed:
            out.append(f"{name}={getattr(cfg, name)!r} not one of {', '.join(allowed)}")

    def positive(name, allow_zero=False):
        value = getattr(cfg, name)
        if value is None or isinstance(value, bool) or value < 0 or (value == 0 and not allow_zero):
            out.append(f"{name}={value!r} must be {'>= 0' if allow_zero else '> 0'}")

    choice("variant", VARIANTS)
    choice("backbone", BACKBONES)
    choice("loss_variant", LOSS_VARIANTS)
    choice("optimizer", OPTIMIZERS)
    choice("lr_schedule", SCHEDULES)
    choice("class_weighting", CLASS_WEIGHTINGS)
    choice("keep_best", KEEP_BEST)
    choice("precision", PRECISIONS)
    choice("prior_correction_choice", PRIOR_CHOICES)
    for name in ("num_classes", "width", "batch_size", "max_steps", "learning_rate",
                 "step_size", "max_to_keep"):
        positive(name)
    for name in ("weight_decay", "momentum", "save_every_steps", "save_every_secs",
                 "eval_every_steps", "summary_every_steps", "image_summary_every_steps",
                 "log_every_steps", "num_prediction_pngs", "seed", "max_minutes", "poly_power",
                 "prior_correction", "lovasz_weight"):
        positive(name, allow_zero=True)
    if not cfg.prior_correction <= MAX_PRIOR_CORRECTION:
        out.append(f"prior_correction={cfg.prior_correction!r} must be in [0, "
                   f"{MAX_PRIOR_CORRECTION:g}]")
    if not 0.0 <= cfg.prior_correction_floor < 1.0:
        out.append(f"prior_correction_floor={cfg.prior_correction_floor!r} must be in [0, 1) "
                   "(a pixel accuracy; 0: keep prior_correction)")
    if not 0.0 <= cfg.ema_decay < 1.0:
        out.append(f"ema_decay={cfg.ema_decay!r} must be in [0, 1) (0: no weight averaging)")
    if cfg.lr_schedule == "poly_time" and not cfg.max_minutes:
        out.append("lr_schedule='poly_time' decays over the time budget: it needs max_minutes > 0")
    if not 0 <= cfg.void_label <= 255 or cfg.void_label < cfg.num_classes:
        out.append(f"void_label={cfg.void_label} must be in [num_classes, 255]")
    if cfg.crop_size is not None and (cfg.crop_size < 32 or cfg.crop_size > 4096):
        out.append(f"crop_size={cfg.crop_size} must be in [32, 4096] or None (full images)")
    if not 0.0 <= cfg.val_fraction < 1.0:
        out.append(f"val_fraction={cfg.val_fraction} must be in [0, 1)")
    if cfg.scale_jitter is not None:
        lo_hi = tuple(cfg.scale_jitter)
        if len(lo_hi) != 2 or not 0.1 <= lo_hi[0] <= lo_hi[1] <= 10.0:
            out.append(f"scale_jitter={cfg.scale_jitter} must be (min, max) with 0.1 <= min <= max <= 10")
    if not (cfg.repeat_factor_threshold == 0 or 0 < cfg.repeat_factor_threshold <= 1):
        out.append(f"repeat_factor_threshold={cfg.repeat_factor_threshold!r} must be 0 (uniform "
                   "sampling) or in (0, 1]")
    if cfg.class_names is not None and len(cfg.class_names) != cfg.num_classes:
        out.append(f"class_names has {len(cfg.class_names)} entries, expected {cfg.num_classes}")
    if cfg.class_colors is not None and (len(cfg.class_colors) != cfg.num_classes or any(
            len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in cfg.class_colors)):
        out.append(f"class_colors must be {cfg.num_classes} [r, g, b] triples of 0..255")
    if cfg.class_weights is not None and len(cfg.class_weights) != cfg.num_classes:
        out.append(f"class_weights has {len(cfg.class_weights)} entries, expected {cfg.num_classes}")
    if cfg.class_priors is not None and (not cfg.class_priors
                                         or len(cfg.class_priors) != cfg.num_classes
                                         or min(cfg.class_priors) < 0
                                         or not sum(cfg.class_priors) > 0):
        out.append(f"class_priors must be {cfg.num_classes} non-negative frequencies, not all 0")
    if cfg.dropout is not None and (isinstance(cfg.dropout, bool)
                                    or not isinstance(cfg.dropout, (int, float))
                                    or not 0.0 <= cfg.dropout < 1.0):
        out.append(f"dropout={cfg.dropout!r} must be in [0, 1) or None (the backbone's default)")
    if (isinstance(cfg.input_scale, bool) or not isinstance(cfg.input_scale, (int, float))
            or not MIN_INPUT_SCALE <= cfg.input_scale <= MAX_INPUT_SCALE):
        out.append(f"input_scale={cfg.input_scale!r} must be in "
                   f"[{MIN_INPUT_SCALE}, {MAX_INPUT_SCALE}]")
    if cfg.init_from is not None and cfg.vgg16_weights is not None:
        out.append("init_from and vgg16_weights both start the weights: give one")
    if cfg.vgg16_weights is not None and cfg.backbone != "vgg16":
        out.append("vgg16_weights needs backbone='vgg16'")
    # NaN passes every comparison above, and the graph takes integers as int32/int64 constants
    for field in dataclasses.fields(cfg):
        for value in _numbers(getattr(cfg, field.name)):
            if isinstance(value, float) and not math.isfinite(value):
                out.append(f"{field.name}={getattr(cfg, field.name)!r} must be finite")
                break
            if isinstance(value, int) and not -MAX_INT < value < MAX_INT:
                out.append(f"{field.name}={value!r} must be below {MAX_INT:,}")
                break
    return out


def _numbers(value):
    values = value if isinstance(value, (list, tuple)) else [value]
    return [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]


_TUPLE_FIELDS = ("class_weights", "scale_jitter", "class_priors")


def _as_float(value, source, name):
    try:
        return float(value)
    except OverflowError:  # an integer of hundreds of digits
        raise ConfigError(f"{source}: {name} is out of range") from None


def from_dict(values, source="config"):
    """Build a RunConfig from a plain dict, checking keys and types."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a JSON object")
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown keys {', '.join(unknown)}")
    kwargs = {}
    for name, value in values.items():
        default = fields[name].default
        if name in _TUPLE_FIELDS:
            if value is not None:
                if not isinstance(value, (list, tuple)) or not all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                    raise ConfigError(f"{source}: {name} must be a list of numbers or null")
                value = tuple(_as_float(v, source, name) for v in value)
        elif default is None or name == "crop_size":
            pass  # optional fields: checked by value below
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{source}: {name} must be true or false, got {value!r}")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{source}: {name} must be an integer, got {value!r}")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{source}: {name} must be a number, got {value!r}")
            value = _as_float(value, source, name)
        elif isinstance(default, str) and not isinstance(value, str):
            raise ConfigError(f"{source}: {name} must be a string, got {value!r}")
        kwargs[name] = value
    if kwargs.get("class_names") is not None:
        if not isinstance(kwargs["class_names"], list) or not all(
                isinstance(n, str) for n in kwargs["class_names"]):
            raise ConfigError(f"{source}: class_names must be a list of strings or null")
        kwargs["class_names"] = tuple(kwargs["class_names"])
    if kwargs.get("class_colors") is not None:
        colors = kwargs["class_colors"]
        if not isinstance(colors, list) or not all(
                isinstance(c, list) and all(isinstance(v, int) and not isinstance(v, bool)
                                            for v in c) for c in colors):
            raise ConfigError(f"{source}: class_colors must be a list of [r, g, b] or null")
        kwargs["class_colors"] = tuple(tuple(c) for c in colors)
    for name in ("crop_size",):
        if kwargs.get(name) is not None and (isinstance(kwargs[name], bool)
                                             or not isinstance(kwargs[name], int)):
            raise ConfigError(f"{source}: {name} must be an integer or null")
    if kwargs.get("dropout") is not None:
        if isinstance(kwargs["dropout"], bool) or not isinstance(kwargs["dropout"], (int, float)):
            raise ConfigError(f"{source}: dropout must be a number or null")
        kwargs["dropout"] = _as_float(kwargs["dropout"], source, "dropout")
    for name in ("vgg16_weights", "data_fingerprint", "init_from"):
        if kwargs.get(name) is not None and not isinstance(kwargs[name], str):
            raise ConfigError(f"{source}: {name} must be a string or null")
    try:
        return RunConfig(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def save(config, train_dir):
    """Write ``TRAIN_DIR/config.json`` atomically (temp file, then rename)."""
    write_json(pathlib.Path(train_dir) / CONFIG_NAME, config.to_dict())


def load(train_dir):
    """Read and validate ``TRAIN_DIR/config.json``."""
    path = pathlib.Path(train_dir) / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(f"{path}: no config.json (not a training directory of fcn_tf1?)")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # ValueError: bad JSON, bad UTF-8,
        reason = " ".join(str(err).split())[:200]       # an integer of 5000 digits
        raise ConfigError(f"{path}: unreadable config ({reason})") from None
    return from_dict(values, source=str(path))


def merge_for_resume(saved, requested, explicit, train_dir):
    """The config a resumed run continues with.

    Args:
      saved: the RunConfig of the existing run (from its config.json).
      requested: the RunConfig built from this command line.
      explicit: names of the fields the user set explicitly on this command line.
      train_dir: for the error message.

    Returns:
      ``saved`` with the explicitly given overridable fields taken from
      ``requested``. An explicitly given field that would change the graph,
      the variables or the data order is a ``ConfigError`` naming each one.
    """
    conflicts = [
        f"{name}: run has {getattr(saved, name)!r}, command asks for {getattr(requested, name)!r}"
        for name in sorted(explicit)
        if name not in RESUME_OVERRIDABLE and getattr(saved, name) != getattr(requested, name)]
    if conflicts:
        raise ConfigError(
            f"{pathlib.Path(train_dir) / CONFIG_NAME}: cannot resume with a different setup ("
            + "; ".join(conflicts) + "); use a new --train-dir or drop those options")
    changes = {name: getattr(requested, name) for name in explicit if name in RESUME_OVERRIDABLE}
    return saved.replace(**changes)
