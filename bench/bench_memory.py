"""Peak memory of training and of evaluation, each in a child process, and its growth with the data.

    subset_h5(source, target, count)        a prepared HDF5 file of ``count`` images of ``source``
    start_child(argv, log_path)             a child process, output to a log file
    peak_rss_mb(proc, log_path, mode)       waits for it; its own ru_maxrss (os.wait4), in MiB
    measure(spec, source, sizes, ...)       train and eval children on files of each size
    python -m bench.bench_memory train|eval --data FILE --spec JSON --steps N
                                 --threads N --inter-threads N        (the child)

The training child is fcn_tf1.train.train itself (the real loop: BatchStream
with prefetch over every image of the file, Saver, summaries off, no
validation split), for ``--steps`` steps at the spec's batch and full image
size; the evaluation child is evaluate.evaluate_in_session over the file's
first ``--steps`` batches (ours_graph.GraphEvaluator). Both read only the
images they use, so their peak RSS must not grow with the number of images
in the file: the files of each size are built from the same source by
copying its compressed chunks (h5py direct chunk I/O), cycling through the
source's images when it has fewer (names then get a ``#k`` suffix).
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import h5py

from fcn_tf1.errors import FcnError

from .children import child_env, module_command


def subset_h5(source, target, count):
    """Writes ``target``: the first ``count`` images of ``source`` (cycled), chunks copied as is."""
    with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
        available = len(src["images"])
        names = [str(n) for n in src["names"].asstr()[()]]
        for key in ("images", "labels"):
            data = src[key]
            out = dst.create_dataset(key, (count,) + data.shape[1:], data.dtype,
                                     chunks=data.chunks, compression=data.compression,
                                     compression_opts=data.compression_opts)
            zeros = (0,) * (data.ndim - 1)
            for i in range(count):
                mask, chunk = data.id.read_direct_chunk((i % available,) + zeros)
                out.id.write_direct_chunk((i,) + zeros, chunk, mask)
        dst.create_dataset("names", dtype=h5py.string_dtype("utf-8"), data=[
            names[i % available] + (f"#{i // available}" if i >= available else "")
            for i in range(count)])
        for key, value in src.attrs.items():
            dst.attrs[key] = value
    return target


def start_child(argv, log_path):
    """Starts ``argv`` with its output in ``log_path``; returns the Popen."""
    with open(log_path, "w") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=child_env())


def peak_rss_mb(proc, log_path, mode):
    """Waits for the ``mode`` child ``proc``; returns its peak resident set size in MiB.

    ``os.wait4`` gives the resource usage of exactly this child (RUSAGE_CHILDREN
    would be the maximum over every child waited for so far), so children may
    run at the same time.
    """
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = pathlib.Path(log_path).read_text(errors="replace").strip().splitlines()[-3:]
        raise FcnError(f"the {mode} memory child failed (exit {proc.returncode}): "
                       + " | ".join(tail))
    return usage.ru_maxrss / 1024.0  # Linux: kilobytes


def _child_argv(mode, data, spec, steps, threads, inter_threads):
    return module_command("bench_memory", mode, "--data", data, "--spec",
                          json.dumps(spec.to_dict()), "--steps", steps, "--threads", threads,
                          "--inter-threads", inter_threads)


def measure(spec, source, sizes, train_steps, eval_batches, threads, inter_threads, workdir,
            log=print):
    """Peak RSS of a training and an evaluation child on a file of each size.

    Returns:
        dict: ``{"train": {size: MiB}, "eval": {size: MiB}}`` plus ``growth_mb``
        {"train": ..., "eval": ...} from the smallest to the largest file.
    """
    workdir = pathlib.Path(workdir)
    result = {"train": {}, "eval": {}}
    for size in sizes:
        path = subset_h5(source, workdir / f"subset_{size}.h5", size)
        children = {}  # the training and the evaluation child run side by side
        for mode, steps in (("train", train_steps), ("eval", eval_batches)):
            log_path = workdir / f"{mode}_{size}.log"
            argv = _child_argv(mode, path, spec, steps, threads, inter_threads)
            children[mode] = (start_child(argv, log_path), log_path)
        try:
            for mode, (proc, log_path) in children.items():
                result[mode][size] = peak_rss_mb(proc, log_path, mode)
                log(f"  {mode} on {size} images: peak RSS {result[mode][size]:.0f} MiB")
        finally:
            for proc, _ in children.values():
                if proc.returncode is None:  # its sibling failed: do not leave it running
                    proc.kill()
                    os.waitpid(proc.pid, 0)
        path.unlink()
    small, large = min(sizes), max(sizes)
    result["growth_mb"] = {mode: result[mode][large] - result[mode][small]
                           for mode in ("train", "eval")}
    return result


def _child(argv=None):
    parser = argparse.ArgumentParser(description="one measured child of bench_memory.py")
    parser.add_argument("mode", choices=("train", "eval"))
    parser.add_argument("--data", required=True)
    parser.add_argument("--spec", required=True, help="BenchSpec as JSON")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--inter-threads", type=int, required=True)
    args = parser.parse_args(argv)
    from . import fcn_spec
    from .ours_graph import GraphEvaluator, session_config
    spec = fcn_spec.BenchSpec.from_dict(json.loads(args.spec))
    if args.mode == "eval":
        GraphEvaluator(spec, args.data, args.threads, args.inter_threads).run(args.steps)
        return 0
    from fcn_tf1 import train
    config = spec.run_config(args.data).replace(
        max_steps=args.steps, val_fraction=0.0, save_every_steps=0, summary_every_steps=0,
        image_summary_every_steps=0, log_every_steps=0, num_prediction_pngs=0)
    with tempfile.TemporaryDirectory(prefix="fcn_bench_train_") as run_dir:
        train.train(config, pathlib.Path(run_dir) / "run", log=lambda *a, **k: None,
                    session_config=session_config(args.threads, args.inter_threads))
    return 0


if __name__ == "__main__":
    sys.exit(_child())
