"""The benchmark's kernel floor, its report lines, and the time-to-accuracy figure of runs.

The kernel floor runs for real on a tiny network (64 x 64, batch 2): its rows
must add up to the floor, cover every kind of kernel the step runs, and its
convolution FLOPs must equal the analytic count of fcn_spec.
"""
import json

import pytest

from bench import bench_limits, bench_report, fcn_spec, kernel_floor, time_to_accuracy
from fcn_tf1 import config as config_lib
from fcn_tf1.errors import FcnError


@pytest.fixture(scope="module")
def tiny_floor(default_data):
    spec = fcn_spec.make_spec("default", 2, 64)
    return spec, kernel_floor.floor(spec, str(default_data), 2, 2, blocks=1, log=lambda _: None)


def test_kernel_floor_rows_add_up_and_cover_the_step(tiny_floor):
    spec, result = tiny_floor
    total = sum(row[3] * row[4] for row in result["rows"])
    assert result["floor_seconds"] == pytest.approx(total)
    # each row: the smaller of its time alone and in the traced step
    for row in result["rows"]:
        assert row[3] == (row[8] if row[9] is None else min(row[8], row[9]))
    assert result["alone_seconds"] >= result["floor_seconds"]
    assert result["overhead"] == pytest.approx(result["step_seconds"] / result["floor_seconds"])
    types = {row[1] for row in result["rows"]}
    for kernel in ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "MaxPool",
                   "MaxPoolGrad", "FusedBatchNormV3", "FusedBatchNormGradV3",
                   "SparseSoftmaxCrossEntropyWithLogits", "ScaleAndTranslate"):
        assert kernel in types, kernel
    # no variable update nor bookkeeping among the timed rows
    assert not types & kernel_floor.BOOKKEEPING
    assert result["resource_ops"]["count"] > 0
    # the conv rows carry the step's convolution FLOPs: the analytic count of the same network
    conv_gflop = sum(row[5] * row[4] for row in result["rows"] if row[5] is not None)
    analytic = fcn_spec.training_conv_flops(fcn_spec.layer_plan(spec), 2, 64, 64)["total"]
    assert conv_gflop * 1e9 == pytest.approx(analytic, rel=1e-6)
    rates = [row[6] for row in result["rows"] if row[6] is not None]
    assert rates and all(rate > 0 for rate in rates)


def test_report_leads_with_the_floor_and_prints_it(tiny_floor):
    _, result = tiny_floor
    audit = {"primitives": {"convolution": {"forward_training": {
                 "implementations": {"brg_conv_fwd:avx512_core": 15}}}},
             "reorders": {"per_step": 40, "ms_per_step": 13.0},
             "creations": {"misses_in_timed_steps": 0}, "flags": []}
    limits = {"kernel_floor": result, "onednn": {"fp32": audit, "bf16": {"error": "child died"}}}
    figures = bench_limits.headline(limits)
    assert figures["kernel_floor_ms"] == pytest.approx(1e3 * result["floor_seconds"])
    assert figures["overhead_vs_kernel_floor"] == result["overhead"]
    assert {row[1] for row in figures["per_op_gflops"]} <= set(kernel_floor.CONV_OPS)
    assert figures["onednn"]["fp32"]["implementations"] == {
        "convolution forward_training": {"brg_conv_fwd:avx512_core": 15}}
    report = dict(figures, details={"limits": limits})
    text = "\n".join(bench_limits.format_lines(report))
    assert "8. kernel floor" in text and "overhead" in text
    assert "9. oneDNN fp32: 40 reorders per step" in text and "9. oneDNN bf16: child died" in text
    # a benchmark whose limits failed still reports
    assert bench_limits.headline({"kernel_floor": {"error": "x"}, "onednn": {}})[
        "kernel_floor_ms"] is None
    assert bench_limits.headline(None)["onednn"] is None
    assert "kernel_floor_ms" in bench_report.build_report({}, {}, None, None, {})


def _run(tmp_path, name, points, steps, seconds, precision="fp32"):
    run = tmp_path / name
    run.mkdir()
    config_lib.save(config_lib.RunConfig(batch_size=8, precision=precision), run)
    (run / "progress.json").write_text(json.dumps({
        "checkpoints": {str(steps): seconds},
        "points": [{"step": s, "minutes": m, "pixel_accuracy": p / 100, "mean_accuracy": 0.3,
                    "mean_iou": iou / 100, "frequency_weighted_iou": 0.6}
                   for s, m, p, iou in points]}))
    return run


def test_time_to_accuracy_finds_the_first_crossing_of_both_thresholds(tmp_path):
    slow = _run(tmp_path, "fp32", [(500, 2.0, 81.0, 20.0), (1000, 4.0, 79.0, 26.0),
                                   (1500, 6.0, 80.5, 25.5), (2000, 8.0, 82.0, 27.0)], 2000, 480.0)
    fast = _run(tmp_path, "bf16", [(500, 1.5, 78.0, 24.0), (1000, 3.0, 80.0, 25.0)], 1000, 180.0,
                "bf16")
    never = _run(tmp_path, "never", [(500, 2.0, 70.0, 30.0), (1000, 4.0, 79.9, 24.0)], 1000, 240.0)
    result = time_to_accuracy.compare([slow, fast, never], 80.0, 25.0)
    slow_run, fast_run, never_run = result["runs"]
    assert slow_run["crossing"]["step"] == 1500 and slow_run["crossing"]["minutes"] == 6.0
    assert fast_run["crossing"]["step"] == 1000  # thresholds are inclusive
    assert fast_run["minutes_ratio"] == pytest.approx(0.5) and slow_run["minutes_ratio"] == 1.0
    assert fast_run["img_per_s"] == pytest.approx(8 * 1000 / 180.0)
    assert fast_run["precision"] == "bf16"
    assert never_run["crossing"] is None and never_run["minutes_ratio"] is None
    assert never_run["best"]["step"] == 500  # the best mean IU
    text = time_to_accuracy.format_compare(result)
    assert "6.0 min (step 1500" in text and "0.50 of the reference" in text
    assert "not reached in 4.0 min" in text


def test_time_to_accuracy_names_a_run_without_a_record(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FcnError, match="empty: no progress.json"):
        time_to_accuracy.summarize(tmp_path / "empty")
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "progress.json").write_text("{not json")
    for name, reason in (("empty", "no progress.json"),
                         ("garbled", "progress.json: not a run's progress record")):
        assert time_to_accuracy.main([str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and reason in err[0] and name in err[0]


def test_kernel_floor_command_refuses_bad_input_in_one_line(tmp_path, capsys):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5")
    for argv, reason in ((["--preset", "nope"], "unknown preset"),
                         (["--size", "50"], "not a multiple of 32"),
                         (["--data", str(garbage)], "garbage.h5: not a readable HDF5 file")):
        assert kernel_floor.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and reason in err[0], err
