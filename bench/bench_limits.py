"""Our step against its own kernels: the kernel floor and the oneDNN audit, each in a child.

    measure(spec, data, floor_blocks, audit_steps, threads, inter_threads, work, log) -> dict
    headline(limits) -> dict                  the figures the report leads with
    format_lines(report) -> [str]             its lines of the printed report

Both run after the interleaved timing, with no worker alive, on the
benchmark's default model and batch:

* kernel_floor.py (a child: ``python -m bench.kernel_floor``): every op of the
  training step timed alone at its own shapes, summed (the floor), the step
  time of the same child, their ratio (the framework's overhead) and each
  convolution's GFLOP/s against the peak measured in that child;
* onednn_audit.py (a child with ONEDNN_VERBOSE set, once per precision):
  which implementation each primitive runs, the reorders and primitive
  creations per step, and the flags (reference or gemm fallbacks).

A part that fails is reported as ``{"error": ...}``; the rest of the
benchmark stands.
"""
import json
import subprocess

from fcn_tf1.config import PRECISIONS

from . import onednn_audit
from .children import child_env, module_command

TOP_KERNELS = 12


def _kernel_floor(spec, data, blocks, threads, inter_threads, work):
    out = f"{work}/kernel_floor.json"
    argv = module_command("kernel_floor", "--size", spec.image_size, "--batch-size",
                          spec.batch_size, "--blocks", blocks, "--threads", threads,
                          "--inter-threads", inter_threads, "--data", data, "--out", out)
    proc = subprocess.run(argv, capture_output=True, text=True,
                          env=child_env(TF_CPP_MIN_LOG_LEVEL="2"))
    if proc.returncode != 0:
        return {"error": " ".join(proc.stderr.strip().splitlines()[-1:]) or
                f"exit {proc.returncode}"}
    with open(out) as result:
        return json.load(result)


def measure(spec, data, floor_blocks, audit_steps, threads, inter_threads, work, log):
    """{"kernel_floor": kernel_floor.floor's dict, "onednn": {precision: audit report}}."""
    log("8. kernel floor: every op of the step timed alone (a child)")
    floor = _kernel_floor(spec, data, floor_blocks, threads, inter_threads, work)
    audits = {}
    for precision in PRECISIONS:
        log(f"9. oneDNN audit, {precision} (a child with ONEDNN_VERBOSE=2)")
        try:
            audits[precision] = onednn_audit.audit(
                audit_steps, precision, spec.image_size, spec.batch_size, threads,
                inter_threads, str(data))
        except RuntimeError as err:
            audits[precision] = {"error": " ".join(str(err).split())}
    return {"kernel_floor": floor, "onednn": audits}


def _audit_summary(report):
    if "error" in report:
        return report
    return {"implementations": {
                f"{kind} {prop}": entry["implementations"]
                for kind, props in report["primitives"].items() for prop, entry in props.items()},
            "reorders_per_step": report["reorders"]["per_step"],
            "reorder_ms_per_step": report["reorders"]["ms_per_step"],
            "cache_misses_in_timed_steps": report["creations"]["misses_in_timed_steps"],
            "flags": report["flags"]}


def headline(limits):
    """kernel_floor_ms, step_ms (same child), overhead_vs_kernel_floor, per_op_gflops (the
    convolutions, longest first: [node, op type, ms, GFLOP/s, fraction of the peak]) and
    onednn (per precision: implementations, reorders, cache misses, flags)."""
    floor = limits["kernel_floor"] if limits else {"error": "not measured"}
    figures = {"kernel_floor_ms": None, "kernel_floor_step_ms": None,
               "overhead_vs_kernel_floor": None, "per_op_gflops": None}
    if "error" not in floor:
        figures.update(
            kernel_floor_ms=floor["floor_seconds"] * 1e3,
            kernel_floor_step_ms=floor["step_seconds"] * 1e3,
            overhead_vs_kernel_floor=floor["overhead"],
            per_op_gflops=[[name, op_type, seconds * 1e3, rate, fraction]
                           for name, op_type, _, seconds, _, _, rate, fraction, *_ in floor["rows"]
                           if rate is not None])
    figures["onednn"] = ({p: _audit_summary(r) for p, r in limits["onednn"].items()}
                         if limits else None)
    return figures


def format_lines(report):
    """The printed lines of the kernel floor and the audits (``report``: the whole report)."""
    floor = (report["details"].get("limits") or {}).get("kernel_floor") or {"error": "not run"}
    if "error" in floor:
        lines = [f"8. kernel floor: {floor['error']}"]
    else:
        lines = [f"8. kernel floor {floor['floor_seconds'] * 1e3:.1f} ms against a step of "
                 f"{floor['step_seconds'] * 1e3:.1f} ms (same child): overhead "
                 f"{floor['overhead']:.3f}; peak conv {floor['peak_conv_gflops_per_s']:.1f} "
                 "GFLOP/s", "  op types, ms per step (count): " + ", ".join(
                     f"{t} {s * 1e3:.1f} ({n})" for t, s, n in floor["by_type"][:8])]
        lines += [f"  {name} [{op_type}]: {ms:.2f} ms, {rate:.1f} GFLOP/s ({fraction:.2f} of peak)"
                  for name, op_type, ms, rate, fraction in report["per_op_gflops"][:TOP_KERNELS]]
    for precision, audit in (report["onednn"] or {}).items():
        if "error" in audit:
            lines.append(f"9. oneDNN {precision}: {audit['error']}")
            continue
        lines.append(f"9. oneDNN {precision}: {audit['reorders_per_step']:g} reorders per step "
                     f"({audit['reorder_ms_per_step']:.1f} ms), cache misses in the timed "
                     f"steps {audit['cache_misses_in_timed_steps']}; flags: "
                     + ("; ".join(audit["flags"]) or "none"))
        lines += [f"  {what}: " + ", ".join(f"{k} x{v:g}" for k, v in impls.items())
                  for what, impls in audit["implementations"].items()]
    return lines
