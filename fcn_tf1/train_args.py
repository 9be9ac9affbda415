"""Command-line options of ``python run_train.py`` / ``fcn-tf1 train`` -> a RunConfig.

    add_arguments(parser)                      every training option
    config_from_args(args)                     -> (RunConfig, explicit field names)
    train_dir_of(args)                         the run directory
    build_config(given, preset, data, ...)     the pure part: options given + preset -> config
    write_run_config / read_run_config         a config passed to other processes (--run-config)

Every option defaults to "not given" (None) so that a resumed run can tell
what the user asked for explicitly from what it inherits from config.json.
"""
import argparse
import dataclasses
import math
import pathlib

from fcn_tf1 import config as config_lib
from fcn_tf1 import paths, presets
from fcn_tf1.errors import ConfigError, reason

DEFAULT_TRAIN_DIR = pathlib.Path("runs") / "default"
D = config_lib.RunConfig()  # the defaults, shown in --help


class _ExplicitNone(str):
    """An option given as "none"/"full": distinct from None, which means "not given"."""


EXPLICIT_NONE = _ExplicitNone("none")  # prints as "none", which parses back to itself


def _optional_int(text):
    if text.lower() in ("none", "full", "0"):
        return EXPLICIT_NONE
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'full', got {text!r}") from None


def _jitter(text):
    if text.lower() == "none":
        return EXPLICIT_NONE
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected MIN,MAX, e.g. 0.75,1.25") from None
    return (lo, hi)


def add_arguments(parser):
    """Adds every training option to ``parser``."""
    data = parser.add_argument_group("data")
    source = data.add_mutually_exclusive_group()
    source.add_argument("--data", type=pathlib.Path, default=None,
                        help="HDF5 file from `fcn-tf1 prepare` (default: the embedded sample "
                             "data/siftflow_sample.h5, real SIFT Flow images)")
    source.add_argument("--data-dir", type=pathlib.Path, default=None,
                        help="a dataset folder as released, its layout detected: SIFT Flow "
                             "(../shared/siftflow), CamVid in SegNet's layout (../shared/camvid) "
                             "or Pascal VOC; prepared into --prepared first (once), then trained "
                             "on. Your own folders: `fcn-tf1 prepare` first, then --data")
    data.add_argument("--split", default=None,
                      help="with --data-dir: the split to prepare (default: SIFT Flow's trainval, "
                           "validation carved from it; CamVid's and VOC's train+val, validated "
                           "on their val list)")
    data.add_argument("--prepared", type=pathlib.Path, default=None,
                      help="with --data-dir: where the prepared HDF5 goes "
                           "(default: the cache folder, $FCN_TF1_CACHE or ~/.cache/fcn_tf1, "
                           "as DATASET_SPLIT_<key of ROOT>.h5)")
    data.add_argument("--allow-other-data", action="store_const", const=True, default=None,
                      help="resume although the data file's fingerprint (size, images, names, "
                           "labels) differs from the one config.json recorded")
    data.add_argument("--val-fraction", type=float, default=None,
                      help=f"fraction of images per category (name prefix) held out for "
                           f"validation, deterministic; a data file with its own validation list "
                           f"(CamVid's, VOC's val) uses that list instead (default "
                           f"{D.val_fraction})")
    data.add_argument("--crop-size", type=_optional_int, default=None,
                      help=f"random square crop for training; 'full' for whole images (a file of "
                           f"mixed sizes: the largest, smaller ones padded with void) "
                           f"(default {D.crop_size})")
    data.add_argument("--no-flip", dest="flip", action="store_const", const=False, default=None,
                      help="no random horizontal flips")
    data.add_argument("--scale-jitter", type=_jitter, default=None,
                      help="random rescale range MIN,MAX before cropping, e.g. 0.75,1.25 "
                           "(default: none)")
    data.add_argument("--repeat-factor-threshold", type=float, default=None, metavar="T",
                      help="oversample the training images that show rare classes (repeat "
                           "factor sampling, Gupta et al. 2019): a class in a fraction f of the "
                           "training images gets r = max(1, sqrt(T/f)), an image the largest r "
                           "of its classes, and each epoch draws as many images as there are, "
                           "with replacement, in proportion to r. T in (0, 1], e.g. 0.1; 0: "
                           f"every image once per epoch (default {D.repeat_factor_threshold:g})")

    run = parser.add_argument_group("run")
    run.add_argument("--preset", choices=sorted(presets.PRESETS), default=None,
                     help="a named recipe for the full SIFT Flow (needs --data-dir or --data); "
                          "options given explicitly win over it. " + presets.describe())
    run.add_argument("--train-dir", type=pathlib.Path, default=None,
                     help="run directory: checkpoints, config.json, summaries, PNGs; an existing "
                          "run there is resumed, never deleted (default: runs/default, with "
                          "--preset runs/PRESET)")
    run.add_argument("--run-config", type=pathlib.Path, default=None, metavar="FILE",
                     help="take every training option from FILE (JSON written by "
                          "`fcn-tf1 cluster-local` for its tasks); only --train-dir and the "
                          "distributed options may be given beside it")
    length = run.add_mutually_exclusive_group()
    length.add_argument("--max-steps", type=int, default=None,
                        help=f"training steps in total (default {D.max_steps})")
    length.add_argument("--epochs", type=float, default=None,
                        help="training length in passes over the training images "
                             "(converted to --max-steps)")
    run.add_argument("--max-minutes", type=float, default=None,
                     help="wall-clock budget of the training in minutes, counted across "
                          "restarts: at the limit the run saves, stops and is validated; "
                          "--lr-schedule poly_time decays over it (a larger budget on resume "
                          "raises that rate again); 0 = none (default 0)")
    run.add_argument("--batch-size", type=int, default=None,
                     help=f"images per step (default {D.batch_size})")
    run.add_argument("--precision", choices=config_lib.PRECISIONS, default=None,
                     help="bf16: oneDNN's automatic mixed precision graph rewrite, convolutions "
                          "and their gradients in bfloat16, variables in float32, on CPUs with "
                          "AVX512_BF16 or AMX (skipped elsewhere); 1.31x the img/s of fp32 on an "
                          "AVX512_BF16 EPYC (docs/BENCHMARKS.md) (default fp32)")
    run.add_argument("--seed", type=int, default=None,
                     help=f"seed of the weights, data order and augmentation (default {D.seed})")
    run.add_argument("--save-every-steps", type=int, default=None,
                     help=f"checkpoint every N steps, 0 = off (default {D.save_every_steps})")
    run.add_argument("--save-every-secs", type=float, default=None,
                     help=f"checkpoint every M seconds, 0 = off (default {D.save_every_secs:g})")
    run.add_argument("--max-to-keep", type=int, default=None,
                     help=f"checkpoints kept (default {D.max_to_keep})")
    run.add_argument("--eval-every-steps", type=int, default=None,
                     help="validation pass every E steps, 0 = only at the end "
                          f"(default {D.eval_every_steps})")
    run.add_argument("--summary-every-steps", type=int, default=None,
                     help=f"TensorBoard scalars every K steps (default {D.summary_every_steps})")
    run.add_argument("--image-summary-every-steps", type=int, default=None,
                     help="TensorBoard input/truth/prediction image every K steps "
                          f"(default {D.image_summary_every_steps})")
    run.add_argument("--log-every-steps", type=int, default=None,
                     help=f"progress line every K steps (default {D.log_every_steps})")
    run.add_argument("--keep-best", choices=config_lib.KEEP_BEST, default=None, metavar="METRIC",
                     help="keep the checkpoint of the best validation METRIC in TRAIN_DIR/best "
                          "with its metrics (eval/predict/export --checkpoint best); the "
                          "periodic checkpoints' rotation never deletes it; 'none' keeps none; "
                          f"one of {', '.join(config_lib.KEEP_BEST)} (default {D.keep_best})")
    run.add_argument("--num-prediction-pngs", type=int, default=None,
                     help="validation images written as PNGs at the end "
                          f"(default {D.num_prediction_pngs})")

    net = parser.add_argument_group("model")
    net.add_argument("--variant", choices=config_lib.VARIANTS, default=None,
                     help=f"FCN head: fcn32s, fcn16s +pool4, fcn8s +pool3, fcn4s +pool2 (default {D.variant})")
    net.add_argument("--backbone", choices=config_lib.BACKBONES, default=None,
                     help=f"compact: CPU-sized VGG-style net with batch norm, 8 convs; vgg_bn: "
                          f"the same with VGG16's 13 convs; vgg16: the VGG16 layers "
                          f"(default {D.backbone})")
    net.add_argument("--width", type=int, default=None,
                     help=f"width multiplier of the compact and vgg_bn backbones (default {D.width})")
    net.add_argument("--dropout", type=float, default=None, metavar="RATE",
                     help="dropout rate after fc6 and fc7 in training, 0 for none (default: "
                          "the backbone's, 0.3 compact, 0.5 vgg16)")
    net.add_argument("--input-scale", type=float, default=None, metavar="S",
                     help="run the net on images resampled by S (antialiased bilinear) and "
                          "upsample its logits back, so loss, metrics and predictions stay at "
                          "full resolution; crops are cut at full resolution first, so "
                          "--crop-size full --input-scale 0.5 trains on whole 256x256 scenes, "
                          "the net at 128x128 (a step ~25%% slower than with 128 px crops: the "
                          f"loss stays at full resolution) (default {D.input_scale:g})")
    net.add_argument("--init-from", type=str, default=None, metavar="RUN_DIR_OR_CHECKPOINT",
                     help="start a new run from another run's weights (their moving averages "
                          "if it averaged them): every variable of the same name and shape is "
                          "copied (batch-norm statistics included; not the optimizer state nor "
                          "the step), the others start fresh, e.g. FCN-16s from an FCN-32s run "
                          "(its new skip layer starts at zero); ignored on resume")
    net.add_argument("--vgg16-weights", type=str, default=None,
                     help="Keras VGG16 HDF5 weights (..._tf_kernels.h5 or _notop.h5) to start "
                          "the vgg16 backbone from")

    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--optimizer", choices=config_lib.OPTIMIZERS, help=f"(default {D.optimizer})")
    opt.add_argument("--learning-rate", "--lr", type=float, default=None,
                     help=f"base learning rate (default {D.learning_rate:g})")
    opt.add_argument("--momentum", type=float, default=None,
                     help=f"momentum of the momentum optimizer (default {D.momentum})")
    opt.add_argument("--lr-schedule", choices=config_lib.SCHEDULES, default=None,
                     help="poly: lr*(1-step/max_steps)^power; poly_time: lr*(1-minutes/"
                          "max_minutes)^power, needs --max-minutes and decays over it whatever "
                          "the machine's speed (--max-steps only a cap; rates follow the wall "
                          "clock, runs not exactly repeatable); step: lr*gamma^floor(step/size);"
                          f" constant (default {D.lr_schedule})")
    opt.add_argument("--poly-power", type=float, default=None,
                     help=f"power of the poly and poly_time schedules (default {D.poly_power})")
    opt.add_argument("--step-size", type=int, default=None,
                     help=f"steps between decays of the step schedule (default {D.step_size})")
    opt.add_argument("--step-gamma", type=float, default=None,
                     help=f"decay factor of the step schedule (default {D.step_gamma})")
    opt.add_argument("--weight-decay", type=float, default=None,
                     help=f"L2 factor on conv kernels, added to the loss (default {D.weight_decay:g})")
    opt.add_argument("--ema-decay", type=float, default=None, metavar="D",
                     help="keep an exponential moving average of the weights with decay D "
                          "(0.999: about the last 1000 steps); validation, eval, predict and "
                          "export use the averaged weights, the final validation also scores "
                          "the raw ones (metrics.json raw_weights) (default 0: none)")

    lossg = parser.add_argument_group("loss")
    lossg.add_argument("--loss-variant", choices=config_lib.LOSS_VARIANTS, default=None,
                       help="reshape: logits to [-1, C] and labels to [-1] before "
                            "sparse_softmax_cross_entropy_with_logits, per pixel; "
                            f"reshape_free: 4-D logits straight to the op (default {D.loss_variant})")
    lossg.add_argument("--class-weighting", choices=config_lib.CLASS_WEIGHTINGS, default=None,
                       help="median_frequency: class-balanced loss, weights from the training "
                            "images (Eigen & Fergus: a class's frequency within the images "
                            "showing it); sqrt_median_frequency: their square roots, milder; "
                            "median_frequency_global: frequencies over all training pixels, "
                            "stronger for the rarest (on SIFT Flow too strong: "
                            f"docs/EXPERIMENTS.md) (default {D.class_weighting})")
    lossg.add_argument("--lovasz-weight", type=float, default=None, metavar="W",
                       help="add W times the Lovasz-softmax loss (Berman et al. 2018: 1 - mean "
                            f"IU of the batch, every {config_lib.LOVASZ_STRIDE}th row and column) "
                            f"to the cross entropy (default {D.lovasz_weight:g}: none)")
    lossg.add_argument("--prior-correction", type=float, default=None, metavar="TAU",
                       help="not a loss change: validation, eval, predict and export take "
                            "argmax(logits - TAU * log(class frequency in the training images)) "
                            "(post-hoc logit adjustment, Menon et al. 2021), favouring rare "
                            "classes: mean class accuracy up, pixel accuracy down (the logged "
                            "batch accuracy is of these predictions too). 1 targets "
                            "balanced accuracy for a plain loss; 0: argmax of the logits; at "
                            f"most {config_lib.MAX_PRIOR_CORRECTION:g} "
                            f"(default {D.prior_correction:g})")
    lossg.add_argument("--prior-correction-floor", type=float, default=None, metavar="F",
                       help="choose TAU at the end of training instead, the largest of 0, 0.1, "
                            "..., 1.5 keeping validation pixel accuracy >= F (e.g. 0.79), written "
                            "to config.json for eval/predict/export (default 0: keep TAU)")
    lossg.add_argument("--prior-correction-choice", choices=config_lib.PRIOR_CHOICES,
                       default=None, help="mean_iou: choose TAU at the end for the best validation "
                       f"mean IU (among those keeping F, if given) (default {D.prior_correction_choice})")

    dist = parser.add_argument_group(
        "distributed", "between-graph replicated training on TensorFlow's gRPC runtime (a "
        "cluster of chief/worker/ps tasks, from --cluster or the TF_CONFIG environment "
        "variable), or several towers on one machine's devices")
    dist.add_argument("--cluster", type=pathlib.Path, default=None,
                      help='JSON file {"cluster": {"chief": [...], "worker": ["host:port", ...], '
                           '"ps": [...]}}; TF_CONFIG is used only with --use-tf-config')
    dist.add_argument("--use-tf-config", action="store_true", default=None,
                      help="join the cluster of the TF_CONFIG environment variable (without "
                           "this option TF_CONFIG is ignored, with a warning)")
    dist.add_argument("--allow-remote-cluster", action="store_true", default=None,
                      help="accept cluster addresses that are not loopback: TensorFlow's "
                           "servers listen on every interface, unauthenticated, so only on a "
                           "private network (docs/DISTRIBUTED.md)")
    dist.add_argument("--job-name", choices=("chief", "worker", "ps"), default=None,
                      help="this process's job in the cluster (overrides TF_CONFIG's task.type)")
    dist.add_argument("--task-index", type=int, default=None,
                      help="this process's index in its job (default 0)")
    sync = dist.add_mutually_exclusive_group()
    sync.add_argument("--sync", dest="sync", action="store_const", const=True, default=None,
                      help="average the gradients of all replicas into one update per global "
                           "step (SyncReplicasOptimizer; the default)")
    sync.add_argument("--async", dest="sync", action="store_const", const=False,
                      help="apply every replica's gradients as they come")
    dist.add_argument("--virtual-cpu-towers", action="store_true", default=None,
                      help="with --towers on a machine without that many GPUs: virtual CPU "
                           "devices sharing the same cores (checks the tower code; no faster)")
    dist.add_argument("--tower-variables", choices=("cpu", "gpu"), default=None,
                      help="where the towers' shared variables live: cpu (default, as TF1 "
                           "multi-GPU code kept them) or gpu (/gpu:0)")
    dist.add_argument("--no-gpu-memory-growth", dest="gpu_memory_growth", action="store_false",
                      default=None,
                      help="let TensorFlow reserve nearly all GPU memory at start (default: "
                           "take it as needed, so other processes can share the GPU)")
    dist.add_argument("--towers", type=int, default=None,
                      help="in-graph replication on this machine: split each batch over N "
                           "towers, one per GPU, and apply the averaged gradients once; refused "
                           "without N GPUs unless --virtual-cpu-towers (default 1)")


_FIELD_NAMES = {f.name for f in dataclasses.fields(config_lib.RunConfig)}
_OPTION_NAMES = _FIELD_NAMES | {"data_dir", "prepared", "preset", "epochs", "split", "towers"}
# options that say how to run, not what to train: allowed beside --run-config
RUN_CONFIG_COMPANIONS = frozenset({"train_dir", "cluster", "job_name", "task_index", "sync",
                                   "run_config", "gpu_memory_growth", "use_tf_config",
                                   "allow_remote_cluster"})


def given_options(args):
    """The RunConfig fields the command line actually gave, as {name: value}.

    An option given as "none"/"full" maps to None; options left out are absent.
    """
    return {name: (None if value is EXPLICIT_NONE else value)
            for name, value in vars(args).items()
            if name in _FIELD_NAMES and value is not None}


def build_config(given, preset=None, data=None, epochs=None, count_train_images=None):
    """The command line as a RunConfig: a pure function of what was given.

    Args:
      given: given_options(args) (``data`` excluded: pass it as ``data``).
      preset: a presets.PRESETS name or None; its options fill what ``given``
        leaves out (a preset's None means it, e.g. whole images).
      data: the data file given (``--data``, or the file ``--data-dir`` was
        prepared into), or None for the embedded sample.
      epochs: ``--epochs``, turned into max_steps for the training images.
      count_train_images: callable(data, val_fraction) -> int, needed with
        ``epochs`` (it reads the data file).

    Returns:
      (RunConfig, explicit): ``explicit`` names the fields the user (or the
      preset) chose, which a resumed run checks against its saved config.
    """
    options = {}
    if preset is not None:
        if data is None:
            raise ConfigError(f"--preset {preset} is a recipe for {presets.data_hint(preset)} "
                              "or --data FILE.h5")
        options.update(presets.options(preset))
    options.update({k: v for k, v in given.items() if k != "data"})
    if epochs is not None:
        if epochs <= 0:
            raise ConfigError(f"--epochs {epochs}: must be > 0")
        fraction = options.get("val_fraction", D.val_fraction)
        batch = options.get("batch_size") or D.batch_size
        options["max_steps"] = max(1, math.ceil(epochs * count_train_images(data, fraction)
                                                / batch))
    explicit = set(options) | ({"data"} if data is not None else set())
    options["data"] = str(pathlib.Path(data or paths.DEFAULT_DATA).resolve())
    return config_lib.RunConfig(**options), explicit


def count_train_images(data, val_fraction):
    """Training images of ``data`` after the validation split of ``val_fraction``."""
    from fcn_tf1 import h5data
    with h5data.H5Dataset(data or paths.DEFAULT_DATA) as dataset:
        return len(dataset.split(val_fraction)[0])


def train_dir_of(args):
    """``--train-dir``, else runs/default, or runs/PRESET for a preset."""
    if args.train_dir is not None:
        return args.train_dir
    return DEFAULT_TRAIN_DIR if args.preset is None else DEFAULT_TRAIN_DIR.parent / args.preset


def prepared_data(data_dir, split, prepared=None, log=print):
    """The HDF5 file of ``data_dir``'s ``split`` (None: the layout's default split):
    prepared on first use, then reused. The layout is detected (fcn_tf1.layouts)."""
    from fcn_tf1 import layouts, prepare_data
    descriptor = layouts.descriptor_for(data_dir)
    split = split or layouts.default_split(descriptor)
    out = prepared or paths.prepared_file(data_dir, split, dataset=descriptor.name)
    if out.is_file():
        log(f"using prepared data {out} (delete it to prepare again)")
    else:  # prepare_data.prepare creates the folder, and names it in an error
        log(f"preparing {data_dir} ({descriptor.name}) split {split} -> {out}")
        prepare_data.prepare(data_dir, out, split=split, descriptor=descriptor)
    return out


def config_from_args(args, log=print):
    """Parsed training options -> (RunConfig, explicit); prepares ``--data-dir``.

    With ``--run-config FILE`` (written by write_run_config, e.g. by
    ``fcn-tf1 cluster-local`` for its tasks) the config and its explicit
    fields come from the file, and other training options are refused.
    """
    if args.run_config is not None:
        extra = sorted(name for name, value in vars(args).items()
                       if value is not None and name not in RUN_CONFIG_COMPANIONS
                       and name in _OPTION_NAMES)
        if extra:
            raise ConfigError(f"--run-config: the config comes from {args.run_config}; drop "
                              + ", ".join("--" + name.replace("_", "-") for name in extra))
        return read_run_config(args.run_config)
    data = args.data
    if args.data_dir is not None:
        data = prepared_data(args.data_dir, args.split, args.prepared, log)
    return build_config(given_options(args), args.preset, data, args.epochs, count_train_images)


def write_run_config(path, config, explicit):
    """Writes a config and its explicit fields for ``--run-config`` (atomic JSON)."""
    from fcn_tf1 import rundir
    rundir.write_json(path, {"config": config.to_dict(), "explicit": sorted(explicit)})


def read_run_config(path):
    """(RunConfig, explicit) from a write_run_config file; ConfigError naming it if bad."""
    import json
    try:
        values = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
        explicit = set(values["explicit"])
        config_values = values["config"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: unreadable run config ({reason(err, 200)})") from None
    return config_lib.from_dict(config_values, source=str(path)), explicit
