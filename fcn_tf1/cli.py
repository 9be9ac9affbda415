"""The ``fcn-tf1`` command: thin subcommands that parse, then call the modules.

Every user-facing error (``FcnError``) is printed as one line,
``fcn-tf1: error: <message>``, and the exit status is 2.
"""
import argparse
import os
import pathlib
import sys
import tempfile

from fcn_tf1 import bench_command, paths, prepare_command
from fcn_tf1 import config as config_lib
from fcn_tf1.errors import FcnError


def _add_compare(subparsers):
    p = subparsers.add_parser(
        "compare", help="prove the reshape and reshape-free loss variants equal",
        description="Build both loss variants on the same inference() graph and the same real "
                    "SIFT Flow batch (void pixels included); report both losses, the largest loss "
                    "and gradient differences over every trainable variable, and the training-step "
                    "time of each variant.")
    p.add_argument("--data", type=pathlib.Path, default=paths.DEFAULT_DATA,
                   help="HDF5 file from `fcn-tf1 prepare` (default: the embedded sample)")
    p.add_argument("--batch-size", type=int, default=4, help="images in the compared batch")
    p.add_argument("--repeats", type=int, default=7, help="timed training steps per variant")
    p.add_argument("--out", "--json", dest="out", type=pathlib.Path, default=None, metavar="FILE",
                   help="also write the report as JSON to FILE")
    p.add_argument("--seed", type=int, default=0, help="graph seed for the initial weights")
    p.add_argument("--variant", choices=config_lib.VARIANTS, default="fcn8s",
                   help="FCN head (default: fcn8s)")
    p.add_argument("--backbone", choices=config_lib.BACKBONES, default="compact",
                   help="backbone, randomly initialised (default: compact)")
    p.add_argument("--width", type=int, default=32,
                   help="channel multiplier of the compact and vgg_bn backbones (default: 32)")
    p.set_defaults(func=_run_compare)


def _run_compare(args):
    from fcn_tf1 import compare
    compare.run_compare(args.data, batch_size=args.batch_size, repeats=args.repeats,
                        json_out=args.out, seed=args.seed, variant=args.variant,
                        backbone=args.backbone, width=args.width)
    return 0


TRAIN_DESCRIPTION = (
    "Train (or resume) an FCN on SIFT Flow: placeholders -> inference() -> per-pixel softmax "
    "cross-entropy on logits reshaped to [-1, C] (void pixels masked) -> optimizer, in a "
    "tf.compat.v1.Session loop with tf.train.Saver checkpoints. With no options it trains the "
    "default compact FCN-8s on the embedded sample in data/ for a few minutes, evaluates it on "
    "the sample's validation images and writes prediction PNGs.")


def _add_train(subparsers):
    from fcn_tf1 import train_args
    p = subparsers.add_parser("train", help="train or resume a run (same as python run_train.py)",
                              description=TRAIN_DESCRIPTION)
    train_args.add_arguments(p)
    p.set_defaults(func=_run_train)


def _run_train(args):
    from fcn_tf1 import train, train_args
    from fcn_tf1.errors import ConfigError
    from fcn_tf1.parallel import cluster, devices, distributed
    # --cluster FILE or TF_CONFIG: one task of a cluster; a ps task needs no data
    task = cluster.resolve_task(args.cluster, args.job_name, args.task_index,
                                use_tf_config=args.use_tf_config,
                                allow_remote=args.allow_remote_cluster)
    towers = args.towers or 1
    if task is not None and task.job_name == "ps":
        distributed.serve(task)
        return 0
    config, explicit = train_args.config_from_args(args)
    train_dir = train_args.train_dir_of(args)
    if task is not None:
        if towers != 1:
            raise ConfigError("--towers: one tower per cluster task (start one worker per device)")
        result = distributed.run_task(config, train_dir, task, explicit,
                                      sync=args.sync is not False)
    elif args.sync is not None:
        raise ConfigError("--sync/--async: need a cluster (--cluster FILE, or TF_CONFIG with "
                          "--use-tf-config)")
    elif towers != 1 or args.virtual_cpu_towers or args.tower_variables:
        result = train.train(config, train_dir, explicit=explicit, devices=devices.tower_devices(
            towers, virtual_cpus=bool(args.virtual_cpu_towers),
            variables_on=args.tower_variables or "cpu",
            gpu_memory_growth=args.gpu_memory_growth is not False))
    else:
        result = train.train(config, train_dir, explicit=explicit,
                             session_config=devices.session_config(
                                 gpu_memory_growth=args.gpu_memory_growth is not False))
    return stopped_exit_code(result["stopped_by"])


def stopped_exit_code(signal_name):
    """0 for a run that ended; 128 + the signal's number (SIGTERM 143, SIGINT 130) for one
    stopped by a signal after saving, so that SLURM or Kubernetes requeue a preempted job
    instead of taking it for completed. Running the same command again resumes it."""
    if signal_name is None:
        return 0
    import signal
    return 128 + signal.Signals[signal_name].value


def _add_cluster_local(subparsers):
    from fcn_tf1 import train_args
    p = subparsers.add_parser(
        "cluster-local", help="distributed training with every task on this machine",
        description="Start a TensorFlow cluster of --workers worker and --ps ps tasks on free "
                    "127.0.0.1 ports, each `fcn-tf1 train` with the given training options and "
                    "its own TF_CONFIG (worker 0 is the chief: it writes the run directory), "
                    "stream their output prefixed by the task, stop the ps tasks when the "
                    "workers are done. Ctrl-C/SIGTERM stops every task (the chief saves first); "
                    "the exit status is non-zero when a worker failed.")
    launcher = p.add_argument_group("cluster")
    launcher.add_argument("--workers", type=int, default=2, help="worker tasks (default 2)")
    launcher.add_argument("--ps", type=int, default=1, help="parameter-server tasks (default 1)")
    launcher.add_argument("--grace-secs", type=float, default=30.0,
                          help="time a task gets to stop after SIGTERM before it is killed "
                               "(default 30)")
    launcher.add_argument("--timeout-secs", type=float, default=None,
                          help="stop the whole run after this long (exit status 124)")
    train_args.add_arguments(p)
    p.set_defaults(func=_run_cluster_local)


def _run_cluster_local(args):
    from fcn_tf1 import train_args
    from fcn_tf1.errors import ConfigError
    from fcn_tf1.parallel import cluster_local
    if args.cluster is not None or args.job_name is not None or args.task_index is not None:
        raise ConfigError("cluster-local: --cluster/--job-name/--task-index are chosen by the "
                          "launcher; drop them")
    if (args.towers or 1) != 1:
        raise ConfigError("--towers: one tower per cluster task (start one worker per device)")
    if args.workers < 1 or args.ps < 1:
        raise ConfigError(f"--workers {args.workers} --ps {args.ps}: need at least one of each")
    # the config is built (and the data prepared) once; every task reads the same file
    config, explicit = train_args.config_from_args(args)
    train_dir = train_args.train_dir_of(args)
    with tempfile.TemporaryDirectory(prefix="fcn-tf1-cluster-") as tmp:
        run_config = pathlib.Path(tmp) / "run_config.json"
        train_args.write_run_config(run_config, config, explicit)
        words = (["--run-config", str(run_config), "--train-dir", str(train_dir)]
                 + (["--async"] if args.sync is False else []))
        result = cluster_local.launch(words, workers=args.workers, ps=args.ps,
                                      grace_secs=args.grace_secs, timeout_secs=args.timeout_secs,
                                      log=lambda line: print(line, flush=True))
    return result.exit_code


def _add_eval(subparsers):
    p = subparsers.add_parser(
        "eval", help="score a trained run: pixel acc., mean class acc., mean IU, f.w. IU",
        description="Full-resolution inference of a trained run, a streaming confusion matrix "
                    "(void pixels excluded) and the FCN paper's metrics: mean IU averaged over "
                    "the classes present in the evaluated ground truth, and also as FCN's "
                    "score.py averages it (classes in the truth or predicted). Without "
                    "--data/--data-dir it scores the run's own validation split; a --data file "
                    "or --data-dir without --split is scored without the run's training images.")
    p.add_argument("--train-dir", required=True, type=pathlib.Path, help="the run to evaluate")
    _add_checkpoint_option(p)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--data", type=pathlib.Path, default=None,
                        help="HDF5 file from `fcn-tf1 prepare`: its images the run did not "
                             "train on are scored")
    source.add_argument("--data-dir", type=pathlib.Path, default=None,
                        help="a dataset folder as released (SIFT Flow, SegNet's CamVid, VOC; "
                             "the layout is detected), read directly (with --split/--names-file)")
    p.add_argument("--split", default=None,
                   help="with --data-dir: the split list (default: SIFT Flow's trainval, "
                        "SegNet's and VOC's train+val)")
    p.add_argument("--names-file", type=pathlib.Path, default=None,
                   help="with --data-dir: a file of image names instead of --split")
    p.add_argument("--include-training-images", action="store_true",
                   help="also score the images the run trained on (by default a --data file "
                        "or --data-dir without --split is scored without them; with them the "
                        "numbers are not validation numbers, and a warning says so)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    p.add_argument("--out", "--json", dest="out", type=pathlib.Path, default=None, metavar="FILE",
                   help="also write the metrics as JSON to FILE")
    _add_test_time_views(p)
    _add_sweep(p)
    p.set_defaults(func=_run_eval)


def _add_checkpoint_option(p):
    p.add_argument("--checkpoint", default=None, metavar="best|latest|PREFIX",
                   help="latest (the default): the newest complete checkpoint; best: the one "
                        "of the best validation pass (TRAIN_DIR/best, see train --keep-best); "
                        "or a checkpoint prefix such as DIR/model.ckpt-500")


def _add_test_time_views(p):
    p.add_argument("--test-scales", type=_scale_list, default=None, metavar="M[,M...]",
                   help="test-time scales as multiples of the run's --input-scale, e.g. "
                        "0.75,1,1.25: the net runs once per scale and the softmax probabilities "
                        "are averaged (default: 1 only, the scale it trained at; each added scale "
                        "costs a forward pass)")
    p.add_argument("--test-flip", action="store_true",
                   help="also average over the left-right mirrored image (doubles the passes)")
    p.add_argument("--prior-correction", type=float, default=None, metavar="TAU",
                   help="predict argmax(logits - TAU * log(training class frequency)) (post-hoc "
                        "logit adjustment, Menon et al. 2021): trades pixel accuracy for mean "
                        "class accuracy; 0 = none (default: the run's own --prior-correction); "
                        "a run without stored class frequencies counts them in its data file")


def _add_sweep(p):
    p.add_argument("--prior-correction-sweep", action="store_true",
                   help="score the corrections 0, 0.1, ..., 1.5 in one pass and print pixel "
                        "accuracy / mean class accuracy / mean IU for each, to choose a "
                        "--prior-correction (--out: the table as JSON)")


def _scale_list(text):
    # the range is checked against the run's input_scale (load_run.check_test_scales)
    try:
        return tuple(float(word) for word in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected comma-separated numbers such as 1,1.25") from None


def _run_eval(args):
    from fcn_tf1 import evaluate
    evaluate.run_eval(args.train_dir, checkpoint=args.checkpoint, data=args.data,
                      data_dir=args.data_dir, split=args.split, names_file=args.names_file,
                      batch_size=args.batch_size, json_out=args.out,
                      test_scales=args.test_scales, test_flip=args.test_flip,
                      prior_correction=args.prior_correction,
                      include_training=args.include_training_images,
                      sweep=args.prior_correction_sweep)
    return 0


def _add_predict(subparsers):
    p = subparsers.add_parser(
        "predict", help="class maps and coloured overlays for any JPEG/PNG images",
        description="For each image NAME: OUT/NAME.png (the class map, 0..C-1, an indexed PNG "
                    "whose palette holds the class colours) and "
                    "OUT/NAME_color.png (palette over the image, legend of the classes present). "
                    "Unreadable images are reported and skipped; the exit status is then 1.")
    p.add_argument("--train-dir", required=True, type=pathlib.Path, help="the trained run")
    _add_checkpoint_option(p)
    p.add_argument("--out", "--out-dir", dest="out", required=True, type=pathlib.Path,
                   help="directory the PNGs go to (created if needed)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing NAME.png / NAME_color.png files (an input image is "
                        "never replaced)")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                   help="image files, or directories of .jpg/.jpeg/.png files")
    _add_test_time_views(p)
    p.set_defaults(func=_run_predict)


def _run_predict(args):
    from fcn_tf1 import predict
    written, failures = predict.predict(args.train_dir, args.out, args.inputs,
                                        checkpoint=args.checkpoint, test_scales=args.test_scales,
                                        test_flip=args.test_flip,
                                        prior_correction=args.prior_correction,
                                        overwrite=args.overwrite)
    print(f"wrote {len(written)} prediction(s) to {args.out}")
    for failure in failures:
        print(f"fcn-tf1: error: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _add_export(subparsers):
    p = subparsers.add_parser(
        "export", help="write a SavedModel for TF2 serving",
        description="A SavedModel loadable with tf.saved_model.load in eager TF2: signature "
                    "serving_default, input images uint8 [N,H,W,3], outputs classes int32 "
                    "[N,H,W] and probabilities float32 [N,H,W,C] (C: the run's classes).")
    p.add_argument("--train-dir", required=True, type=pathlib.Path, help="the trained run")
    _add_checkpoint_option(p)
    p.add_argument("--out", required=True, type=pathlib.Path, help="new SavedModel directory")
    p.set_defaults(func=_run_export)


def _run_export(args):
    from fcn_tf1 import export
    out = export.export(args.train_dir, args.out, checkpoint=args.checkpoint)
    print(f"wrote SavedModel {out}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="fcn-tf1",
        description="FCN scene labeling on SIFT Flow in TF1-style graph code (tf.compat.v1).")
    _add_version(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    prepare_command.add_parser(subparsers)
    _add_train(subparsers)
    _add_cluster_local(subparsers)
    _add_eval(subparsers)
    _add_predict(subparsers)
    _add_export(subparsers)
    _add_compare(subparsers)
    bench_command.add_parser(subparsers)
    return parser


def main(argv=None):
    """``fcn-tf1 COMMAND ...``; returns the exit status."""
    return _dispatch(build_parser(), argv)


def main_train(argv=None, prog="run_train.py"):
    """``python run_train.py ...``: the train command with its own name in usage and errors."""
    parser = argparse.ArgumentParser(prog=prog, description=TRAIN_DESCRIPTION)
    _add_version(parser)
    from fcn_tf1 import train_args
    train_args.add_arguments(parser)
    parser.set_defaults(func=_run_train)
    return _dispatch(parser, argv)


def _add_version(parser):
    from importlib import metadata
    from fcn_tf1 import __version__
    try:
        tensorflow = metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        tensorflow = "not installed"
    parser.add_argument("--version", action="version",
                        version=f"fcn_tf1 {__version__} (TensorFlow {tensorflow})")


def _dispatch(parser, argv):
    # TensorFlow's C++ start-up chatter (CPU features, missing CUDA) is not for users; its
    # errors still show. An explicit TF_CPP_MIN_LOG_LEVEL in the environment wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except FcnError as err:
        print(f"fcn-tf1: error: {err}", file=sys.stderr)  # one prefix, whichever front door
        return getattr(err, "exit_code", 2)
    except KeyboardInterrupt:
        print("fcn-tf1: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
