"""``fcn-tf1 bench``: our graph path against Keras 3 and PyTorch, the hardware limit, memory.

    run(options, log=print) -> report dict        options: the parsed ``fcn-tf1 bench`` arguments
    select_mode(options) -> Mode                  full, --quick or --smoke
    python -m bench [--quick|--smoke] [--json OUT] ...   same as ``fcn-tf1 bench ...``

Steps (docs/BENCHMARKS.md explains the method):

0. the architecture check (arch_check.py, child processes running while the
   workers set up): the Keras and PyTorch peers must have our parameters,
   output shape, logits, weight decay and loss, or nothing is timed;
1-5. one worker process per framework (bench_worker.py); every case set up
   and warmed up, then timed in interleaved rounds (bench_interleave.py);
   then one traced step of ours for its FLOPs and top ops (ours_analysis.py);
   the default model is also trained in bfloat16 in every mode, each
   framework with its own mixed precision (ours_bf16, keras_bf16 without
   XLA, torch_bf16 channels_last; bench_cases.py);
6. peak RSS of training and evaluation children on HDF5 files of 200 and
   2000 images (bench_memory.py);
7. the kernel floor and the oneDNN audits of our step, in children
   (bench_limits.py); with ``--time-to-accuracy RUN...`` the minutes those
   runs took to a validation accuracy (time_to_accuracy.py, read first, so
   a bad train dir stops the run before anything is timed);
8. the report (bench_report.py), printed, and written with ``--json OUT``.

Modes: the full run (7 rounds, 3 steps per block, the vgg16 backbone, both
PyTorch memory layouts), ``--quick`` (5 rounds of one step, no vgg16 and
channels_last only, fewer memory steps: meant to stay under 3 minutes on the
2-core machine) and ``--smoke`` (64 x 64 images, tiny kernels, 2 rounds: it
only shows that every part runs; its figures mean nothing).
"""
import dataclasses
import importlib.util
import json
import os
import pathlib
import platform
import subprocess
import tempfile

from fcn_tf1 import paths
from fcn_tf1.errors import DataError, FcnError

from . import bench_interleave as interleave
from . import bench_limits, bench_memory, bench_report, fcn_spec
from .children import REPO_ROOT, child_env, module_command

# the full trainval split where `--data-dir ../shared/siftflow` prepared it
PREPARED = paths.prepared_file(REPO_ROOT.parent / "shared" / "siftflow", "trainval")
SAMPLE = paths.DEFAULT_DATA
STREAM_JITTER = (0.6, 1.25)  # flip + scale jitter: the heaviest augmentation of the presets
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of bfloat16 instructions
MEMORY_SIZES = (200, 2000)


@dataclasses.dataclass(frozen=True)
class Mode:
    """How much a run measures; the figures' definitions never change with it."""
    name: str
    repeats: int = 7
    train_steps: int = 3  # training steps per timed block
    warmup: int = 2  # untimed blocks of one unit after set-up (XLA compiles in the first)
    image_size: int = 256
    batch_size: int = 8
    vgg16_batch_size: int = 1
    vgg16: bool = True
    torch_nchw: bool = True
    eval_batches: int = 8
    loss_runs: int = 5
    loss_shape: tuple = (8, 256, 256, 33)
    peak_runs: tuple = (("conv", 3, None), ("matmul", 1, None))  # kernel, runs, size
    memory_train_steps: int = 10
    memory_eval_batches: int = 8
    settle_secs: float = 0.25
    floor_blocks: int = 5  # timed blocks per kernel, and timed steps, of the kernel floor
    audit_steps: int = 3  # timed steps of each oneDNN audit


MODES = {
    "full": Mode("full"),
    "quick": Mode("quick", repeats=5, train_steps=1, warmup=1, vgg16=False, torch_nchw=False,
                  eval_batches=2, loss_runs=2, memory_train_steps=3, memory_eval_batches=2,
                  settle_secs=0.1, floor_blocks=3, audit_steps=2),
    "smoke": Mode("smoke", repeats=2, train_steps=1, warmup=1, image_size=64, batch_size=2,
                  vgg16=False, torch_nchw=False, eval_batches=1, loss_runs=1,
                  loss_shape=(2, 64, 64, 33), peak_runs=(("conv", 1, 8), ("matmul", 1, 256)),
                  memory_train_steps=1, memory_eval_batches=1, settle_secs=0.0,
                  floor_blocks=1, audit_steps=1),
}


def select_mode(options):
    """The Mode of ``options`` (the parsed ``fcn-tf1 bench`` arguments): smoke, quick or full."""
    return MODES["smoke" if options.smoke else "quick" if options.quick else "full"]


def _data(options):
    if options.data is not None:
        return pathlib.Path(options.data)
    return PREPARED if PREPARED.is_file() else SAMPLE


def _train_case(name, framework, spec, data, mode, **extra):
    return interleave.Case(name, framework, "train", dict(spec=spec.to_dict(), data=str(data), **extra),
                mode.train_steps, mode.warmup)


def _peer_cases(suffix, spec, data, mode):
    cases = [_train_case("ours" + suffix, "ours", spec, data, mode),
             _train_case("keras" + suffix, "keras", spec, data, mode, xla=False),
             _train_case("keras_xla" + suffix, "keras", spec, data, mode, xla=True),
             _train_case("torch" + suffix, "torch", spec, data, mode, channels_last=True)]
    if mode.torch_nchw:
        cases.append(_train_case("torch_nchw" + suffix, "torch", spec, data, mode,
                                 channels_last=False))
    return cases


def build_cases(mode, data, default_spec, vgg16_spec):
    """Every timed case of a run, in their first-round order."""
    Case = interleave.Case
    cases = _peer_cases("", default_spec, data, mode)
    cases += [_train_case(f"{framework}_bf16", framework, default_spec, data, mode,
                          precision="bf16", **extra)
              for framework, extra in (("ours", {}), ("keras", {"xla": False}),
                                       ("torch", {"channels_last": True}))]
    cases += [
        _train_case("ours_stream", "ours", default_spec, data, mode, feed="stream",
                    jitter=list(STREAM_JITTER)),
        _train_case("ours_reshape_free", "ours", default_spec.replace(loss_variant="reshape_free"),
                    data, mode),
        Case("ours_eval", "ours", "eval", {"spec": default_spec.to_dict(), "data": str(data)},
             mode.eval_batches, 1),
    ]
    cases += [Case(f"loss_op_{variant}", "ours", "loss_op",
                   {"variant": variant, "shape": list(mode.loss_shape)}, mode.loss_runs, 1)
              for variant in ("reshape", "reshape_free")]
    cases += [Case(f"peak_{kernel}", "ours", "peak", {"kernel": kernel, "size": size}, runs, 1)
              for kernel, runs, size in mode.peak_runs]
    if vgg16_spec is not None:
        cases += _peer_cases("_vgg16", vgg16_spec, data, mode)
    return cases


def start_architecture_checks(specs, frameworks):
    """arch_check.py children (64 x 64, batch 1), one per spec, started now (they run while
    the workers set up: nothing is timed then)."""
    started = []
    for spec in specs:
        argv = module_command("arch_check", "--backbone", spec.backbone, "--variant",
                              spec.variant, "--width", spec.width, "--size", 64, "--batch", 1,
                              "--frameworks", ",".join(frameworks))
        started.append((spec, subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=child_env(TF_CPP_MIN_LOG_LEVEL="2"))))
    return started


def finish_architecture_checks(started, frameworks, log):
    """Waits for the checks; returns their reports; FcnError when a peer is not our network."""
    reports = []
    for spec, proc in started:
        out, err = proc.communicate()
        lines = out.strip().splitlines()
        report = json.loads(lines[-1]) if lines else {"ok": False, "error": err[-500:]}
        if not report.get("ok"):
            raise FcnError(f"the peers are not our architecture ({spec.label}): "
                           f"{' '.join(str(report.get('error')).split())}")
        log(f"  architecture check, {spec.label}: {report['ours']['parameters']:,} parameters "
            "in ours, " + ", ".join(f"{f} {report[f]['parameters']:,} (logits within "
                                    f"{report[f]['max_rel_logit_diff']:.1g})" for f in frameworks))
        reports.append(report)
    return reports


def cpu_has_bf16():
    """True when /proc/cpuinfo lists a bfloat16 instruction set (CPU_BF16_FLAGS); None
    where there is no /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = set(cpuinfo.read().split())
    except OSError:
        return None
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def _versions():
    from importlib import metadata
    out = {"python": platform.python_version(), "machine": platform.machine(),
           "cpu_count": os.cpu_count()}
    for package in ("tensorflow", "keras", "torch", "numpy", "h5py"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def _timed_part(cases, frameworks, options, mode, work, gate, log):
    """Workers up, cases set up, ``gate()`` (raises to stop before any timing), interleaved
    rounds, the analysis of ours; workers down. Returns (summaries, skipped, analysis, gate())."""
    workers = interleave.start_workers(frameworks, options.threads, options.inter_threads, work)
    try:
        log(f"setting up {len(cases)} cases in {len(workers)} worker processes")
        ready, skipped = interleave.setup_cases(workers, cases, log)
        passed = gate()
        log(f"timing: {mode.repeats} interleaved rounds")
        results = interleave.time_interleaved(workers, ready, mode.repeats, mode.settle_secs, log)
        analysis = None
        if "ours" in results:
            reply = workers["ours"].request({"op": "analyze", "case": "ours"})
            analysis = reply if reply.get("ok") else None
            if analysis is None:
                skipped["analysis"] = reply.get("error")
    finally:
        for worker in workers.values():
            worker.close()
    summaries = {name: interleave.summarize(r) for name, r in results.items() if r}
    return summaries, skipped, analysis, passed


def _time_to_accuracy(options):
    """time_to_accuracy.compare of the runs given with --time-to-accuracy, else None."""
    runs = getattr(options, "time_to_accuracy", None)
    if not runs:
        return None
    from . import time_to_accuracy
    return time_to_accuracy.compare(runs, options.tta_pixel, options.tta_mean_iou)


def run(options, log=print):
    """Runs the benchmark described by ``options`` (see fcn_tf1.cli's bench options)."""
    mode = select_mode(options)
    data = _data(options)
    if not data.is_file():
        raise DataError(f"{data}: no such HDF5 file (give --data FILE.h5)")
    tta = _time_to_accuracy(options)  # reads the runs first: a bad train dir stops at once
    default_spec = fcn_spec.make_spec("default", mode.batch_size, mode.image_size)
    vgg16_spec = (fcn_spec.make_spec("vgg16", mode.vgg16_batch_size, mode.image_size,
                                     backbone="vgg16") if mode.vgg16 else None)
    has_torch = importlib.util.find_spec("torch") is not None
    log(f"fcn-tf1 bench ({mode.name}): {options.threads} intra-op / {options.inter_threads} "
        f"inter-op threads for every framework; data {data}")
    checked = ("keras", "torch") if has_torch else ("keras",)
    checks = start_architecture_checks([s for s in (default_spec, vgg16_spec) if s], checked)
    cases = build_cases(mode, data, default_spec, vgg16_spec)
    frameworks = sorted({case.framework for case in cases})
    with tempfile.TemporaryDirectory(prefix="fcn_bench_") as work:
        try:
            summaries, skipped, analysis, arch = _timed_part(
                cases, frameworks, options, mode, work,
                lambda: finish_architecture_checks(checks, checked, log), log)
        finally:
            for _, proc in checks:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if not vgg16_spec:
            skipped["*_vgg16"] = f"not in --{mode.name} runs"
        log(f"6. memory: training and evaluation children on {MEMORY_SIZES} images")
        memory = bench_memory.measure(default_spec, data, MEMORY_SIZES, mode.memory_train_steps,
                                      mode.memory_eval_batches, options.threads,
                                      options.inter_threads, work, log)
        limits = bench_limits.measure(default_spec, data, mode.floor_blocks, mode.audit_steps,
                                      options.threads, options.inter_threads, work, log)
    plan = fcn_spec.layer_plan(default_spec)
    context = {
        "analytic_conv_flops": fcn_spec.training_conv_flops(
            plan, default_spec.batch_size, default_spec.image_size,
            default_spec.image_size)["total"],
        "settings": {"mode": dataclasses.asdict(mode), "threads": options.threads,
                     "inter_threads": options.inter_threads, "data": str(data),
                     "default_spec": default_spec.to_dict(),
                     "vgg16_spec": vgg16_spec.to_dict() if vgg16_spec else None,
                     "stream_jitter": STREAM_JITTER},
        "versions": _versions(),
        "architecture_check": arch,
        "limits": limits,
        "time_to_accuracy": tta,
    }
    report = bench_report.build_report(summaries, skipped, analysis, memory, context,
                                       cpu_bf16=cpu_has_bf16())
    log(bench_report.format_report(report))
    if mode.name == "smoke":
        log("(--smoke: tiny sizes; these figures mean nothing)")
    return report
