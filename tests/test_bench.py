"""The benchmark's own correctness, fast: its peers are our network, its FLOPs and report add up.

The benchmark itself (``python -m bench`` or ``fcn-tf1 bench``) is not run here:
it times things, BENCHMARKS.md says how. These tests check what its figures
rest on, on 64 x 64 inputs: the Keras 3 and PyTorch peers have exactly our
parameters, output shape, logits, weight decay and loss; the profiler's
convolution FLOPs equal the analytic count; the report's figures follow from
the timed cases; the HDF5 subsets for the memory figures are valid files.
"""
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

import bench
from bench import arch_check, bench_interleave, bench_memory, bench_report, fcn_spec, run_bench
from fcn_tf1 import bench_command, cli
from fcn_tf1.errors import DataError
from fcn_tf1.h5data import H5Dataset

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = fcn_spec.make_spec("tiny", 2, 64)  # the default model (RunConfig()), 64 x 64


@pytest.fixture(scope="module")
def reference():
    """Our default network at 64 x 64 with random weights (score layers included)."""
    return arch_check.ours_reference(TINY)


def _assert_matches(framework, reference):
    result = arch_check.check_peer(framework, reference)
    assert result["problems"] == []
    assert result["parameters"] == sum(reference["groups"].values()) == 989011
    assert result["groups"] == reference["groups"]  # layer by layer
    assert result["output_shape"] == list(reference["logits"].shape) == [2, 64, 64, 33]
    assert result["max_rel_logit_diff"] < arch_check.LOGIT_TOLERANCE


def test_keras_peer_is_our_network(reference):
    _assert_matches("keras", reference)


def test_torch_peer_is_our_network(reference):
    pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[bench]')")
    _assert_matches("torch", reference)


@pytest.mark.parametrize("variant", ["fcn16s", "fcn32s", "fcn4s"])
def test_peers_follow_the_variant(variant):
    spec = TINY.replace(variant=variant, width=4, batch_size=1)
    frameworks = ("keras", "torch") if importlib.util.find_spec("torch") else ("keras",)
    report = arch_check.check_architectures(spec, frameworks)
    assert {report[f]["parameters"] for f in frameworks} == {report["ours"]["parameters"]}


def test_a_different_network_is_caught(reference):
    altered = dict(reference, groups=dict(reference["groups"], fc7=1),
                   logits=reference["logits"] * 1.1)
    problems = arch_check.check_peer("keras", altered)["problems"]
    assert any("parameters differ in fc7" in p for p in problems)
    assert any("logits differ" in p for p in problems)


# Run from the repository root (``python -c`` imports from the working directory).
_PROFILE_STEP = """
import json, sys
from bench import fcn_spec
from bench.ours_analysis import step_flops
from fcn_tf1 import compare
spec = fcn_spec.make_spec("tiny", 1, 64)
images, labels, _ = compare.read_void_batch(sys.argv[1], 1)
print(json.dumps(step_flops(spec, sys.argv[1], images[:, :64, :64], labels[:, :64, :64], 1, 1)))
"""


@pytest.mark.integration
def test_profiler_flops_equal_the_analytic_count(default_data):
    # In a fresh process without oneDNN's graph rewrites (TF_ENABLE_ONEDNN_OPTS=0, read at
    # import): on AVX-512 hosts they fuse ops and the profiler then misses ~0.2 % of the
    # conv FLOPs (measured on an AVX-512 host: 246373248 against 246846336).
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0")
    done = subprocess.run([sys.executable, "-c", _PROFILE_STEP, str(default_data)], env=env,
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=True)
    flops = json.loads(done.stdout.strip().splitlines()[-1])
    spec = TINY.replace(batch_size=1)
    assert spec == fcn_spec.make_spec("tiny", 1, 64)  # what the child profiled
    analytic = fcn_spec.training_conv_flops(fcn_spec.layer_plan(spec), 1, 64, 64)
    assert flops["conv"] == analytic["total"]
    assert flops["total"] >= flops["conv"]


def _summary(name, seconds, items, **extra):
    return name, bench_interleave.summarize(
        [dict({"seconds": s, "items": items}, **extra) for s in seconds])


def test_report_figures_follow_from_the_cases():
    summaries = dict([
        _summary("ours", [1.0, 2.0, 1.1, 1.2, 0.9], 8, steps=1),
        _summary("keras", [2.0] * 5, 8, steps=1),
        _summary("keras_xla", [1.6] * 5, 8, steps=1),
        _summary("ours_stream", [1.21] * 5, 8, steps=1),
        _summary("ours_reshape_free", [1.32] * 5, 8, steps=1),
        _summary("ours_eval", [2.0] * 5, 16, forward_seconds=1.5),
        _summary("peak_matmul", [1.0] * 5, 1, flops=100e9),
    ])
    memory = {"train": {200: 800.0, 2000: 802.0}, "eval": {200: 700.0, 2000: 701.0},
              "growth_mb": {"train": 2.0, "eval": 1.0}}
    analysis = {"flops": {"total": 44e9, "conv": 43e9}, "top_ops": None}
    report = bench_report.build_report(summaries, {"torch": "not installed"}, analysis, memory,
                                       {"analytic_conv_flops": 43e9})
    assert report["train_img_per_s"] == {"ours": 8 / 1.1, "keras": 4.0, "keras_xla": 5.0,
                                         "torch": None}
    assert report["ratio_vs_best_peer"] == pytest.approx((8 / 1.1) / 5.0)
    assert report["step_gflops_per_s"] == pytest.approx(40.0)
    assert report["peak_gflops_per_s"] == pytest.approx(100.0)
    assert report["flops_fraction_of_peak"] == pytest.approx(0.4)
    assert report["input_pipeline_overhead"] == pytest.approx(0.1)
    assert report["loss_variant_time_ratio"] == pytest.approx(1.2)
    assert report["eval_img_per_s"] == pytest.approx(8.0)
    assert report["details"]["eval_outside_forward_share"] == pytest.approx(0.25)
    assert report["peak_rss_mb"] == {"train": 802.0, "eval": 701.0}
    assert report["rss_growth_200_to_2000_images_mb"] == 2.0
    assert "skipped torch: not installed" in bench_report.format_report(report)


def test_hdf5_subsets_are_valid_files(default_data, tmp_path):
    target = bench_memory.subset_h5(default_data, tmp_path / "subset.h5", 60)  # sample: 56
    with H5Dataset(target) as subset, h5py.File(default_data, "r") as source:
        assert len(subset) == 60 and len(set(subset.names)) == 60
        np.testing.assert_array_equal(subset.image(57), source["images"][1])
        np.testing.assert_array_equal(subset.label(3), source["labels"][3])
        assert subset.names[57].endswith("#1")


@pytest.mark.parametrize("argv, mode", [([], "full"), (["--quick"], "quick"),
                                         (["--smoke"], "smoke")])
def test_bench_options_select_the_mode(argv, mode):
    """What ``fcn-tf1 bench`` parses is what the benchmark reads: the mode and its sizes."""
    args = cli.build_parser().parse_args(["bench", *argv, "--threads", "3"])
    chosen = run_bench.select_mode(args)
    assert chosen.name == mode and args.threads == 3
    assert chosen.vgg16 == (mode == "full") and (chosen.image_size == 64) == (mode == "smoke")


def test_bench_quick_and_smoke_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["bench", "--quick", "--smoke"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_bench_run_names_a_missing_data_file_before_starting_anything(tmp_path):
    args = cli.build_parser().parse_args(["bench", "--smoke", "--data", str(tmp_path / "no.h5")])
    args.inter_threads = args.threads
    missing = re.escape(f"{tmp_path / 'no.h5'}: no such HDF5 file")
    with pytest.raises(DataError, match=f"^{missing}"):
        bench.run(args, log=lambda *a: pytest.fail("logged before the data check"))


def test_bench_without_the_bench_directory(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(bench_command, "BENCH_DIR", tmp_path / "bench")
    assert cli.main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"fcn-tf1: error: {tmp_path / 'bench'}"), err
