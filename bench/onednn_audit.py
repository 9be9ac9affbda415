"""Which oneDNN implementation each primitive of our training step runs, read off oneDNN's log.

    python -m bench.onednn_audit [--steps 3] [--precision fp32|bf16] [--size 256]
                                 [--batch-size 8] [--threads 2] [--data H5] [--out FILE.json]
    audit(steps, precision, size, batch_size, threads, ...) -> report dict (runs a child)
    summarize(lines) -> report dict          the parser: a pure function over the log's lines
    parse_line(line) -> Record or None       one ``onednn_verbose`` primitive line

A child process (``--child``) builds our training step (ours_graph.GraphTrainer
on fcn_spec.make_spec's default spec at ``--size`` and ``--batch-size``, in
``--precision``: its Session set as train.py sets it) with ``ONEDNN_VERBOSE=2`` set
before TensorFlow loads: oneDNN prints to stdout one line per primitive
creation (``create:cache_miss`` / ``create:cache_hit``) and per execution:

    onednn_verbose,v1,primitive,exec,cpu,<kind>,<implementation>,<propagation>,
        <memory descriptors>,<attributes>,<auxiliary>,<problem>,<ms>

It runs 2 warm-up and ``--steps`` timed steps on the benchmark's batch
(compare.read_void_batch) and marks each phase and step end in the same stream
(``onednn_audit,...`` lines, both stdio buffers flushed first), so every line
belongs to one step. The report, per timed step:

* ``primitives[kind][propagation]``: executions, ms (the sum of oneDNN's
  times), implementations with their counts (``brg_conv_fwd:avx512_core``:
  brgemm convolution, ``jit:avx512_core``, ``gemm:jit``: im2col + gemm,
  ``ref:any``: reference loops, slow) and the operands' data types
  (``src:bf16 wei:bf16 dst:bf16``). ``gemm_api`` is no primitive but sgemm
  called by TensorFlow's Eigen kernels: in fp32, the transposed convolutions
  (Conv2DBackpropInput with explicit padding, and its filter gradient) that
  never reach a oneDNN convolution; in bf16 Eigen's bfloat16 contraction
  runs them and they leave no line at all.
* ``reorders``: layout conversions per (source -> destination) format, e.g.
  ``f32:cdba -> f32:Acdb16a`` on dims ``16x3x3x3`` (a filter, HWIO -> oneDNN's
  blocked layout); ``each_step``: whether they run every step.
* ``creations``: primitives created per step, cache misses (built from
  scratch, JIT code generated) and hits (oneDNN's primitive cache). Misses
  should be 0 in the timed steps.
* ``flags``: a ``ref`` implementation, a ``gemm`` one for convolution,
  pooling or batch normalization, ``gemm_api`` calls, cache misses in the
  timed steps; each names the problem shape.
* ``onednn_ms_per_step`` against ``wall_ms_per_step``. Verbose logging slows
  every primitive (a line formatted and flushed per call): the wall time is
  above an unlogged step's. With two inter-op threads two primitives may run
  at once, so the sum can exceed the wall time, and a primitive's time
  includes waiting for the intra-op pool while another op holds it (a
  32x16x3x3 filter reorder took 0.04 to 9 ms): hence ``max_ms`` per reorder
  format. Counts and implementations are exact; times are rough, more so
  with other processes on the CPU.
* ``bf16``: the implementations that ran with a bfloat16 operand, and their
  share of oneDNN's time (with ``--precision bf16``).

Lines the parser does not know are counted as ``other_lines``.
"""
import argparse
import collections
import json
import subprocess
import sys
import time

from fcn_tf1 import rundir
from fcn_tf1.config import PRECISIONS

from .children import child_env, module_command

MARK = "onednn_audit"
WARMUP_STEPS = 2
SLOW_KINDS = ("convolution", "deconvolution", "pooling", "batch_normalization")
NO_IMPL = "(none)"

Record = collections.namedtuple(
    "Record", ["event", "cache", "kind", "impl", "prop", "mds", "problem", "ms"])
Record.__doc__ = """One primitive line: event 'exec' or 'create' (cache 'miss'/'hit'/'')."""


def parse_line(line):
    """The Record of one oneDNN verbose primitive line (v3 with or without ``v1``, a
    timestamp or ``primitive`` before the event; v2); None for any other line. Problem
    and time are read from the end: commas in the attributes do not shift them."""
    fields = line.rstrip("\r\n").split(",")
    if fields[0] not in ("onednn_verbose", "dnnl_verbose"):
        return None
    for start, field in enumerate(fields[1:], 1):
        if field == "exec" or field.startswith("create"):
            break
        if not (field == "primitive" or _is_number(field) or
                (field[:1] == "v" and field[1:].isdigit())):
            return None  # info, graph and template lines
    else:
        return None
    rest = fields[start:]
    if len(rest) < 10 or not _is_number(rest[-1]):
        return None
    event, _, cache = rest[0].partition(":")
    return Record(event, cache.replace("cache_", ""), rest[2], rest[3] or NO_IMPL, rest[4],
                  rest[5], rest[-2], float(rest[-1]))


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def memory_descs(text):
    """``[(argument, data type, format tag)]`` of a memory-descriptor field.

    ``src:f32::blocked:acdb::f0`` -> ('src', 'f32', 'acdb'); gemm_api's
    ``src_f32::blocked:ab:f0`` -> ('src', 'f32', 'ab').
    """
    out = []
    for token in text.split():
        parts = token.split(":")
        arg, dtype, rest = parts[0], (parts[1:2] or [""])[0], parts[2:]
        if not dtype and "_" in arg:
            (arg, dtype), rest = arg.rsplit("_", 1), parts[1:]
        out.append((arg, dtype, rest[2] if len(rest) > 2 else ""))
    return out


def dtypes(record):
    """``'src:bf16 wei:bf16 dst:f32'``: the defined data types of a record's operands."""
    return " ".join(f"{a}:{d}" for a, d, _ in memory_descs(record.mds) if d not in ("", "undef"))


def reorder_formats(record):
    """``'f32:cdba -> bf16:AcdB16a2b'`` for a reorder record."""
    descs = {a: f"{d}:{t}" for a, d, t in memory_descs(record.mds)}
    return f"{descs.get('src', '?')} -> {descs.get('dst', '?')}"


def split_steps(lines):
    """The log cut at the markers: (phases {name: [[Record] per step]}, wall seconds per
    phase, meta dict, info lines, number of other lines)."""
    phases, walls, meta, info, other = {}, {}, {}, [], 0
    phase, current = None, []
    for line in lines:
        line = line.rstrip("\r\n")
        if line.startswith(MARK + ","):
            _, what, value = (line.split(",", 2) + ["", ""])[:3]
            if what == "phase":
                phase, current = value, []
                phases.setdefault(phase, [])
                walls.setdefault(phase, [])
            elif what == "step" and phase is not None:
                phases[phase].append(current)
                walls[phase].append(float(value))
                current = []
            elif what == "meta":
                meta.update(json.loads(value))
            continue
        record = parse_line(line)
        if record is not None:
            if phase is not None:
                current.append(record)
        elif line.startswith(("onednn_verbose", "dnnl_verbose")) and ",info," in line:
            info.append(line.split(",info,", 1)[1])
        elif line.strip():
            other += 1
    return phases, walls, meta, info, other


def _per_step(value, steps):
    return round(value / steps, 4) if steps else 0.0


def primitive_table(steps):
    """``{kind: {propagation: {...}}}`` of the exec records of ``steps`` (see the docstring)."""
    n, table = len(steps), {}
    for index, step in enumerate(steps):
        for r in (r for r in step if r.event == "exec"):
            entry = table.setdefault(r.kind, {}).setdefault(r.prop, {
                "executions": 0, "ms": 0.0, "each_step": [0] * n,
                "implementations": collections.Counter(), "dtypes": collections.Counter()})
            entry["executions"] += 1
            entry["ms"] += r.ms
            entry["each_step"][index] += 1
            entry["implementations"][r.impl] += 1
            entry["dtypes"][dtypes(r)] += 1
    for props in table.values():
        for prop, e in props.items():
            props[prop] = {
                "executions_per_step": _per_step(e["executions"], n),
                "ms_per_step": _per_step(e["ms"], n), "each_step": e["each_step"],
                "implementations": {k: _per_step(v, n)
                                    for k, v in e["implementations"].most_common()},
                "dtypes": {k: _per_step(v, n) for k, v in e["dtypes"].most_common()}}
    return table


def execs(steps, kind=None):
    """The exec records of ``steps`` (lists of Records), all or those of ``kind``."""
    return [r for s in steps for r in s if r.event == "exec" and kind in (None, r.kind)]


def reorder_table(steps, warmup):
    """Reorders per step: count, ms, each step's count (timed and warm-up), and per format."""
    n, formats = len(steps), {}
    for r in execs(steps, "reorder"):
        entry = formats.setdefault(reorder_formats(r), {"count": 0, "ms": 0.0, "max": 0.0,
                                                        "dims": set()})
        entry.update(count=entry["count"] + 1, ms=entry["ms"] + r.ms,
                     max=max(entry["max"], r.ms))
        entry["dims"].add(r.problem)
    return {"per_step": _per_step(len(execs(steps, "reorder")), n),
            "ms_per_step": _per_step(sum(e["ms"] for e in formats.values()), n),
            "each_step": [len(execs([s], "reorder")) for s in steps],
            "warmup_each_step": [len(execs([s], "reorder")) for s in warmup],
            "formats": [{"formats": key, "per_step": _per_step(e["count"], n),
                         "ms_per_step": _per_step(e["ms"], n), "max_ms": e["max"],
                         "dims": sorted(e["dims"])}
                        for key, e in sorted(formats.items(), key=lambda kv: -kv[1]["ms"])]}


def creation_table(steps, warmup):
    """Primitive creations per step (timed and warm-up) by cache outcome; the timed misses."""
    def counts(step_list):
        return [dict(collections.Counter(r.cache or "miss" for r in s if r.event == "create"))
                for s in step_list]
    missed = [r for s in steps for r in s if r.event == "create" and r.cache != "hit"]
    return {"each_step": counts(steps), "warmup_each_step": counts(warmup),
            "ms_per_step": _per_step(sum(r.ms for s in steps for r in s
                                         if r.event == "create"), len(steps)),
            "misses_in_timed_steps": len(missed),
            "missed": sorted({f"{r.kind} {r.prop} {r.impl} {r.problem}" for r in missed})}


def find_flags(steps):
    """Slow or suspicious executions of the timed steps, one string per (kind, impl, problem)."""
    n, flags = len(steps), collections.Counter()
    for r in execs(steps):
        if r.impl.startswith("ref") or ":ref" in r.impl or "+ref" in r.impl:
            flags[f"ref implementation: {r.kind} {r.prop} {r.impl} on {r.problem}"] += 1
        elif r.kind in SLOW_KINDS and "gemm" in r.impl:
            flags[f"gemm fallback: {r.kind} {r.prop} {r.impl} on {r.problem}"] += 1
    out = [f"{text} ({_per_step(count, n)} per step)" for text, count in flags.items()]
    gemm_api = execs(steps, "gemm_api")
    if gemm_api:
        shapes = ", ".join(f"{shape} x{_per_step(c, n)}" for shape, c in
                           collections.Counter(r.problem for r in gemm_api).most_common(6))
        out.append(f"gemm_api (sgemm called by TensorFlow's Eigen kernels, not a oneDNN "
                   f"primitive): {_per_step(len(gemm_api), n):g} calls and "
                   f"{_per_step(sum(r.ms for r in gemm_api), n):.1f} ms per step; MxK:KxN "
                   f"{shapes}")
    return out


def bf16_table(steps):
    """Implementations that ran with a bfloat16 operand, and their share of oneDNN's time."""
    bf16 = [r for r in execs(steps) if "bf16" in dtypes(r)]
    kernels = collections.Counter(f"{r.kind} {r.prop} {r.impl} ({dtypes(r)})" for r in bf16)
    total = sum(r.ms for r in execs(steps))
    return {"executions_per_step": _per_step(len(bf16), len(steps)),
            "ms_share": round(sum(r.ms for r in bf16) / total, 4) if total else 0.0,
            "kernels": {k: _per_step(v, len(steps)) for k, v in sorted(kernels.items())}}


def summarize(lines):
    """The report (see the module docstring) of a child's stdout, as lines."""
    phases, walls, meta, info, other = split_steps(lines)
    steps, warmup, timed = phases.get("timed", []), phases.get("warmup", []), walls.get("timed", [])
    n = len(timed)
    wall_ms = 1000 * sum(timed) / n if n else 0.0
    onednn_ms = _per_step(sum(r.ms for r in execs(steps)), n)
    report = dict(meta, steps=n, warmup_steps=len(warmup), onednn=info[:3],
                  wall_ms_per_step=round(wall_ms, 2), onednn_ms_per_step=onednn_ms,
                  wall_ms_each_step=[round(1000 * w, 2) for w in timed],
                  onednn_share_of_wall=round(onednn_ms / wall_ms, 3) if wall_ms else None,
                  executions_per_step=_per_step(len(execs(steps)), n),
                  primitives=primitive_table(steps), reorders=reorder_table(steps, warmup),
                  creations=creation_table(steps, warmup), flags=find_flags(steps),
                  bf16=bf16_table(steps), other_lines=other)
    if report["creations"]["misses_in_timed_steps"]:
        report["flags"].append(f"{report['creations']['misses_in_timed_steps']} primitive "
                               "creation(s) missed the cache in the timed steps")
    if report.get("precision") == "bf16" and not report["bf16"]["kernels"]:
        report["flags"].append("--precision bf16, but no oneDNN primitive ran in bfloat16")
    if not execs(steps):
        report["flags"].append("no oneDNN execution in the timed steps (oneDNN off, e.g. "
                               "TF_ENABLE_ONEDNN_OPTS=0?)")
    return report


def audit(steps=3, precision="fp32", size=256, batch_size=8, threads=2, inter_threads=None,
          data=None, timeout=1800):
    """Runs the child (``python -m bench.onednn_audit --child ...``) and returns its report;
    RuntimeError (with the child's last stderr lines) when it fails or times out."""
    args = ["--child", "--steps", steps, "--precision", precision, "--size", size,
            "--batch-size", batch_size, "--threads", threads,
            "--inter-threads", inter_threads or threads]
    if data is not None:
        args += ["--data", data]
    # ONEDNN_VERBOSE=2: executions and creations; it must be set before TensorFlow loads
    env = child_env(ONEDNN_VERBOSE="2", TF_CPP_MIN_LOG_LEVEL="2")
    try:
        proc = subprocess.run(module_command("onednn_audit", *args), env=env, text=True,
                              capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"onednn_audit child: no result within {timeout} s") from error
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise RuntimeError(f"onednn_audit child exited {proc.returncode}:\n{tail}")
    return summarize(proc.stdout.splitlines())


def _mark(*fields):
    """Prints a marker line after flushing C's stdout, where oneDNN writes, then Python's."""
    import ctypes
    sys.stdout.flush()
    ctypes.CDLL(None).fflush(None)
    print(",".join([MARK, *map(str, fields)]), flush=True)


def run_child(args):
    """The measured steps, with the markers (ONEDNN_VERBOSE is already in the environment)."""
    import tensorflow as tf

    from fcn_tf1 import compare, paths

    from . import fcn_spec, ours_graph
    data = args.data or paths.DEFAULT_DATA
    spec = fcn_spec.make_spec("default", args.batch_size, args.size).replace(
        precision=args.precision)
    trainer = ours_graph.GraphTrainer(spec, data, args.threads, args.inter_threads)
    images, labels, _ = compare.read_void_batch(data, args.batch_size)
    images, labels = images[:, :args.size, :args.size], labels[:, :args.size, :args.size]
    _mark("meta", json.dumps({"tensorflow": tf.__version__, "precision": args.precision,
                              "batch_shape": list(images.shape), "threads": args.threads,
                              "inter_threads": args.inter_threads, "data": str(data)}))
    for phase, count in (("warmup", WARMUP_STEPS), ("timed", args.steps)):
        _mark("phase", phase)
        for _ in range(count):
            start = time.perf_counter()
            trainer.step(images, labels)
            _mark("step", f"{time.perf_counter() - start:.6f}")
    trainer.close()
    return 0


def format_report(report):
    """The report as text: one line per kind and propagation, then reorders, creations, flags."""
    out = [f"{report.get('precision', '?')}, batch {report.get('batch_shape')}, "
           f"{report['steps']} timed steps; oneDNN {report['onednn_ms_per_step']:.1f} ms per "
           f"step of {report['wall_ms_per_step']:.1f} ms wall (verbose on); "
           f"{report['other_lines']} other lines"]
    for kind, props in sorted(report["primitives"].items()):
        for prop, e in props.items():
            impls = ", ".join(f"{k} x{v:g}" for k, v in e["implementations"].items())
            out.append(f"  {kind:20s} {prop:17s} {e['executions_per_step']:6g}/step "
                       f"{e['ms_per_step']:8.2f} ms  {impls}")
    r = report["reorders"]
    out.append(f"reorders: {r['per_step']:g} per step, {r['ms_per_step']:.2f} ms; each timed "
               f"step {r['each_step']}, warm-up {r['warmup_each_step']}")
    out += [f"  {f['formats']:36s} x{f['per_step']:<4g} {f['ms_per_step']:6.2f} ms (max "
            f"{f['max_ms']:.2f})  {' '.join(f['dims'])}" for f in r["formats"]]
    c = report["creations"]
    out.append(f"creations each timed step {c['each_step']} ({c['ms_per_step']:.2f} ms per "
               f"step), warm-up {c['warmup_each_step']}; cache misses in the timed steps: "
               f"{c['misses_in_timed_steps']}")
    if report["bf16"]["kernels"]:
        out.append(f"bf16: {report['bf16']['executions_per_step']:g} executions per step, "
                   f"{100 * report['bf16']['ms_share']:.0f} % of oneDNN's ms")
        out += [f"  {k} x{v:g}" for k, v in report["bf16"]["kernels"].items()]
    out += ["flag: " + f for f in report["flags"]] or ["flags: none"]
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after 2 warm-up)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--size", type=int, default=256, help="image size (multiple of 32)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    parser.add_argument("--inter-threads", type=int, default=None,
                        help="inter-op threads (default: as --threads)")
    parser.add_argument("--data", default=None, help="HDF5 file (default: the embedded sample)")
    parser.add_argument("--out", default=None, help="also write the report as JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.inter_threads = args.inter_threads or args.threads
    if args.child:
        return run_child(args)
    report = audit(args.steps, args.precision, args.size, args.batch_size, args.threads,
                   args.inter_threads, args.data)
    if args.out:
        rundir.write_json(args.out, report)
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
