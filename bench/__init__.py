"""Speed benchmarks: our graph path against the same network in Keras 3 and PyTorch.

    python -m bench [--quick|--smoke] [--out FILE] [--threads N] [--inter-threads N] [--data H5]
    main(argv) -> exit status        the same, from Python (``fcn-tf1 bench`` parses the options)
    run(options, log=print) -> dict  the benchmark itself, on parsed ``fcn-tf1 bench`` options:
                                     quick, smoke, out, threads, inter_threads, data

run_bench.py runs the steps (docs/BENCHMARKS.md explains the method); children.py
says how the worker, architecture-check and memory children are started.
Importing this package loads neither TensorFlow nor PyTorch: every child
process imports it before setting its thread counts.
"""


def run(options, log=print):
    """Runs the benchmark on ``options``; returns the report dict (see run_bench.run)."""
    from .run_bench import run as run_bench
    return run_bench(options, log=log)


def main(argv=None):
    """``fcn-tf1 bench`` with ``argv`` (default: the command line); returns the exit status."""
    import sys

    from fcn_tf1 import cli
    return cli.main(["bench", *(sys.argv[1:] if argv is None else argv)])
