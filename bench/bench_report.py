"""From the measured cases to the report: the JSON figures and the printed table.

    build_report(summaries, skipped, analysis, memory, context, cpu_bf16)  -> dict (--json)
    format_report(report)                                                   -> str

``summaries`` are bench_interleave.summarize() of each timed case by name
('ours', 'keras', 'keras_xla', 'torch', 'torch_nchw', 'ours_stream',
'ours_reshape_free', 'ours_eval', 'loss_op_reshape', 'loss_op_reshape_free',
'peak_conv', 'peak_matmul', the same training names with '_vgg16', and
'ours_bf16', 'keras_bf16', 'torch_bf16').
A case that was skipped or failed is missing; its figures are null.
"""

from . import bench_limits

PEERS = ("keras", "keras_xla", "torch")
BF16_PEERS = ("keras", "torch")  # no XLA, channels_last: the bf16 cases' fp32 counterparts


def _rate(summaries, name):
    return summaries[name]["per_second"] if name in summaries else None


def _train_rates(summaries, suffix):
    """{ours, keras, keras_xla, torch} images/s; torch = the better of its two layouts."""
    rates = {name: _rate(summaries, name + suffix) for name in ("ours",) + PEERS}
    layouts = {"channels_last": rates["torch"], "nchw": _rate(summaries, "torch_nchw" + suffix)}
    measured = [r for r in layouts.values() if r is not None]
    rates["torch"] = max(measured) if measured else None
    return rates, layouts


def _ratio_vs_best_peer(rates, peers=PEERS):
    measured = [p for p in peers if rates[p] is not None]
    if rates["ours"] is None or not measured:
        return None, None
    best = max(measured, key=rates.get)
    return rates["ours"] / rates[best], best


def _bf16(summaries, cpu_bf16):
    """The bfloat16 cases: img/s, each over its own fp32 case (same layout, no XLA), and
    ours over the best bf16 peer."""
    names = ("ours",) + BF16_PEERS
    rates = {name: _rate(summaries, name + "_bf16") for name in names}
    speedups = {name: (rates[name] / _rate(summaries, name)
                       if rates[name] is not None and name in summaries else None)
                for name in names}
    return {"train_img_per_s": rates, "speedup_vs_fp32": speedups,
            "ratio_vs_best_peer": _ratio_vs_best_peer(rates, BF16_PEERS)[0],
            "cpu_bf16": cpu_bf16}


def _step_ratio(summaries, numerator, denominator):
    if numerator in summaries and denominator in summaries:
        return summaries[numerator]["seconds_per_item"] / summaries[denominator]["seconds_per_item"]
    return None


def _flops(summaries, analysis):
    """GFLOP/s of our step (profiler FLOPs / median step time) and of the peak kernels."""
    peaks = {kernel: summaries[f"peak_{kernel}"]["flops"] / summaries[f"peak_{kernel}"]["seconds"]
             / 1e9 for kernel in ("conv", "matmul") if f"peak_{kernel}" in summaries}
    peak = max(peaks.values()) if peaks else None
    step = None
    if analysis and "ours" in summaries:
        ours = summaries["ours"]
        step = analysis["flops"]["total"] / (ours["seconds"] / ours["steps"]) / 1e9
    return step, peak, peaks


def build_report(summaries, skipped, analysis, memory, context, cpu_bf16=None):
    """The report dict: the headline figures first, then details.

    Args:
        summaries: {case name: bench_interleave.summarize(...)}.
        skipped: {case name: reason}.
        analysis: the 'analyze' reply of our default training case (flops,
            top_ops), or None.
        memory: bench_memory.measure(...), or None when not run.
        context: settings, versions, the architecture check, analytic FLOPs, the
            kernel floor and oneDNN audits (``limits``: bench_limits.measure) and
            ``time_to_accuracy`` (time_to_accuracy.compare, or None).
        cpu_bf16: whether the CPU has bfloat16 instructions (None: unknown).
    """
    rates, layouts = _train_rates(summaries, "")
    ratio, best_peer = _ratio_vs_best_peer(rates)
    step_gflops, peak_gflops, peaks = _flops(summaries, analysis)
    eval_case = summaries.get("ours_eval")
    report = {
        "train_img_per_s": rates,
        "ratio_vs_best_peer": ratio,
        "step_gflops_per_s": step_gflops,
        "peak_gflops_per_s": peak_gflops,
        "flops_fraction_of_peak": (step_gflops / peak_gflops
                                   if step_gflops and peak_gflops else None),
        "input_pipeline_overhead": (None if _step_ratio(summaries, "ours_stream", "ours") is None
                                    else _step_ratio(summaries, "ours_stream", "ours") - 1.0),
        "loss_variant_time_ratio": _step_ratio(summaries, "ours_reshape_free", "ours"),
        "eval_img_per_s": eval_case["per_second"] if eval_case else None,
        "peak_rss_mb": ({"train": max(memory["train"].values()),
                         "eval": max(memory["eval"].values())} if memory else None),
        "rss_growth_200_to_2000_images_mb": (max(memory["growth_mb"].values())
                                             if memory else None),
        "bf16": _bf16(summaries, cpu_bf16),
    }
    report.update(bench_limits.headline(context.get("limits")))
    report["time_to_accuracy"] = context.get("time_to_accuracy")
    context = {k: v for k, v in context.items() if k != "time_to_accuracy"}
    vgg_rates, vgg_layouts = _train_rates(summaries, "_vgg16")
    vgg_ratio, vgg_best = _ratio_vs_best_peer(vgg_rates)
    report["details"] = {
        "best_peer": best_peer,
        "torch_layouts_img_per_s": layouts,
        "vgg16": {"train_img_per_s": vgg_rates, "ratio_vs_best_peer": vgg_ratio,
                  "best_peer": vgg_best, "torch_layouts_img_per_s": vgg_layouts},
        "peak_gflops_per_s_by_kernel": peaks,
        "step_flops": analysis["flops"] if analysis else None,
        "step_conv_flops_analytic": context.get("analytic_conv_flops"),
        "eval_outside_forward_share": (1.0 - eval_case["forward_seconds"] / eval_case["seconds"]
                                       if eval_case else None),
        "loss_op_ms": {v: summaries[f"loss_op_{v}"]["seconds_per_item"] * 1e3
                       for v in ("reshape", "reshape_free") if f"loss_op_{v}" in summaries},
        "loss_op_time_ratio": _step_ratio(summaries, "loss_op_reshape_free", "loss_op_reshape"),
        "top_ops": analysis["top_ops"] if analysis else None,
        "memory": memory,
        "skipped": skipped,
        "cases": summaries,
    }
    report["details"].update(context)
    return report


def _fmt(value, spec=".1f", unit=""):
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def _train_lines(title, rates, ratio, best):
    lines = [title]
    for name in ("ours",) + PEERS:
        lines.append(f"  {name:<10} {_fmt(rates[name], '.2f')} img/s")
    lines.append(f"  ours / best peer ({best or 'n/a'}): {_fmt(ratio, '.3f')}")
    return lines


def _bf16_line(bf16):
    cpu = {True: "yes", False: "no", None: "unknown"}[bf16["cpu_bf16"]]
    return (f"   bfloat16, default model (CPU bf16 instructions: {cpu}): " + ", ".join(
        f"{name} {_fmt(rate, '.2f')} img/s ({_fmt(bf16['speedup_vs_fp32'][name], '.2f', 'x')} "
        "vs fp32)"
        for name, rate in bf16["train_img_per_s"].items())
        + f"; ours / best bf16 peer {_fmt(bf16['ratio_vs_best_peer'], '.3f')}")


def format_report(report):
    """The human-readable summary (str)."""
    d = report["details"]
    lines = _train_lines("1. training throughput, default model", report["train_img_per_s"],
                         report["ratio_vs_best_peer"], d["best_peer"])
    lines.append(_bf16_line(report["bf16"]))
    vgg = d["vgg16"]
    if any(v is not None for v in vgg["train_img_per_s"].values()):
        lines += _train_lines("   vgg16 backbone, batch 1", vgg["train_img_per_s"],
                              vgg["ratio_vs_best_peer"], vgg["best_peer"])
    flops = d["step_flops"] or {}
    lines += [
        "2. distance to the limit",
        f"  step FLOPs (profiler) {_fmt(flops.get('total'), ',')}, of which conv "
        f"{_fmt(flops.get('conv'), ',')}; analytic conv {_fmt(d['step_conv_flops_analytic'], ',')}",
        f"  step {_fmt(report['step_gflops_per_s'])} GFLOP/s; peak "
        f"{_fmt(report['peak_gflops_per_s'])} GFLOP/s (" + ", ".join(
            f"{k} {v:.1f}" for k, v in d["peak_gflops_per_s_by_kernel"].items())
        + f"); fraction {_fmt(report['flops_fraction_of_peak'], '.3f')}",
        "3. input pipeline (BatchStream vs one constant batch): overhead "
        + _fmt(None if report["input_pipeline_overhead"] is None
               else 100 * report["input_pipeline_overhead"], "+.1f", "%"),
        f"4. loss variants: step time reshape_free / reshape "
        f"{_fmt(report['loss_variant_time_ratio'], '.3f')}; loss op alone (fwd+grad) "
        + ", ".join(f"{k} {v:.1f} ms" for k, v in d["loss_op_ms"].items())
        + f", ratio {_fmt(d['loss_op_time_ratio'], '.3f')}",
        f"5. eval {_fmt(report['eval_img_per_s'], '.2f')} img/s, "
        f"{_fmt(None if d['eval_outside_forward_share'] is None else 100 * d['eval_outside_forward_share'], '.1f', '%')}"
        " of the time outside the forward pass",
    ]
    memory = d["memory"]
    if memory:
        lines.append("6. peak RSS (MiB): " + "; ".join(
            f"{mode} " + ", ".join(f"{size} images {mb:.0f}" for size, mb in memory[mode].items())
            for mode in ("train", "eval"))
            + f"; growth {', '.join(f'{m} {g:+.0f}' for m, g in memory['growth_mb'].items())}")
    else:
        lines.append("6. memory: not measured")
    top = d["top_ops"]
    if top:
        lines.append(f"7. top ops of one traced step ({top['traced_step_seconds']:.3f} s wall, "
                     f"{top['op_seconds']:.3f} s summed over ops):")
        lines += [f"  {op:<34} {seconds * 1e3:9.1f} ms {100 * share:5.1f}%  x{count}"
                  for op, seconds, share, count in top["by_type"]]
    lines += bench_limits.format_lines(report)
    if report["time_to_accuracy"]:
        from .time_to_accuracy import format_compare
        lines.append("10. time to accuracy: " + format_compare(report["time_to_accuracy"]))
    for name, reason in d["skipped"].items():
        lines.append(f"skipped {name}: {reason}")
    return "\n".join(lines)
