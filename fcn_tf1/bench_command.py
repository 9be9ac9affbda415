"""``fcn-tf1 bench``: its options, and the repository's bench/ package loaded to run it.

The benchmarks live in the bench/ directory of a repository checkout (not in
the installed package); ``python -m bench`` runs the same code from there.
"""
import argparse
import os
import pathlib
import sys

from fcn_tf1.errors import FcnError

BENCH_DIR = pathlib.Path(__file__).resolve().parents[1] / "bench"


def add_parser(subparsers):
    p = subparsers.add_parser(
        "bench", help="benchmarks: throughput vs Keras and PyTorch (fp32, bf16), the kernel "
                      "floor, oneDNN's kernels, FLOPs, pipeline, memory, time to accuracy",
        description="Training throughput of our graph path against the same network in Keras 3 "
                    "(XLA off and on) and PyTorch (CPU; skipped where torch is not installed: "
                    "pip install -e '.[bench]'), in float32 and in bfloat16 (our oneDNN rewrite, "
                    "Keras' mixed_bfloat16 policy, PyTorch's CPU autocast); FLOPs against this "
                    "machine's peak; the kernel floor (every op of the step timed alone at its "
                    "own shapes, summed, against the step time) with each convolution's GFLOP/s; "
                    "which oneDNN implementation each primitive runs (ONEDNN_VERBOSE); input "
                    "pipeline overhead, the two loss variants, evaluation speed, peak memory, "
                    "the top ops of one traced step; and, from runs that already trained, the "
                    "minutes to a validation accuracy. Every timing is a median of interleaved "
                    "rounds after warm-up; every framework gets the same thread counts. Needs "
                    "the bench/ directory of a repository checkout (see docs/BENCHMARKS.md).")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="5 rounds of one step, no vgg16, PyTorch channels_last only "
                           "(meant to take under 3 minutes on 2 cores)")
    size.add_argument("--smoke", action="store_true",
                      help="tiny sizes, to check that every part runs; the figures mean nothing")
    p.add_argument("--out", "--json", dest="out", type=pathlib.Path, default=None, metavar="FILE",
                   help="also write the report as JSON to FILE")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="intra-op threads of every framework (default: the number of cores)")
    p.add_argument("--inter-threads", type=int, default=None,
                   help="inter-op threads of every framework (default: as --threads)")
    p.add_argument("--data", type=pathlib.Path, default=None,
                   help="HDF5 file from `fcn-tf1 prepare` (default: the trainval split of "
                        "../shared/siftflow where `--data-dir` prepared it, else the embedded "
                        "sample)")
    p.add_argument("--time-to-accuracy", nargs="+", type=pathlib.Path, default=None,
                   metavar="RUN",
                   help="also report, from these train dirs (already trained, validated "
                        "often), the training minutes until validation first reached "
                        "--tta-pixel %% pixel accuracy and --tta-mean-iou %% mean IU; the first "
                        "run is the reference of the minutes ratio")
    p.add_argument("--tta-pixel", type=float, default=80.0, metavar="PERCENT",
                   help="pixel accuracy threshold of --time-to-accuracy (default %(default)s)")
    p.add_argument("--tta-mean-iou", type=float, default=25.0, metavar="PERCENT",
                   help="mean IU threshold of --time-to-accuracy (default %(default)s)")
    p.set_defaults(func=run)


def _bench_package():
    """The bench/ package of this checkout, imported as ``bench`` without editing sys.path.

    ``python -m bench`` has imported it already; from anywhere else (``fcn-tf1 bench``)
    it is loaded from BENCH_DIR, its submodules found there.
    """
    import importlib.util
    loaded = sys.modules.get("bench")
    if loaded is not None and pathlib.Path(loaded.__file__).resolve().parent == BENCH_DIR:
        return loaded
    init = BENCH_DIR / "__init__.py"
    if not init.is_file():
        raise FcnError(f"{BENCH_DIR}: no bench package; the benchmarks live in the bench/ "
                       "directory of a repository checkout, not in the installed package")
    spec = importlib.util.spec_from_file_location(
        "bench", init, submodule_search_locations=[str(BENCH_DIR)])
    package = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = package
    spec.loader.exec_module(package)
    return package


def run(args):
    from fcn_tf1 import rundir
    from fcn_tf1.errors import ConfigError
    bench = _bench_package()
    if args.threads < 1 or (args.inter_threads is not None and args.inter_threads < 1):
        raise ConfigError("--threads and --inter-threads must be at least 1")
    options = argparse.Namespace(**dict(vars(args),
                                        inter_threads=args.inter_threads or args.threads))
    report = bench.run(options)
    if args.out is not None:
        rundir.write_json(args.out, report)
        print(f"wrote {args.out}")
    return 0
