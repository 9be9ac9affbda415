"""The benchmark's own correctness, fast: its peers are our network, its FLOPs and report add up.

The benchmark itself (``fcn-tf1 bench``, bench/run_bench.py) is not run here:
it times things, BENCHMARKS.md says how. These tests check what its figures
rest on, on 64 x 64 inputs: the Keras 3 and PyTorch peers have exactly our
parameters, output shape, logits, weight decay and loss; the profiler's
convolution FLOPs equal the analytic count; the report's figures follow from
the timed cases; the HDF5 subsets for the memory figures are valid files.
"""
import importlib.util
import pathlib
import sys

import h5py
import numpy as np
import pytest

from fcn_tf1 import cli
from fcn_tf1.h5data import H5Dataset

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
import arch_check  # noqa: E402  (bench/arch_check.py)
import bench_interleave  # noqa: E402
import bench_memory  # noqa: E402
import bench_report  # noqa: E402
import fcn_spec  # noqa: E402

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


@pytest.mark.parametrize("variant", ["fcn16s", "fcn32s"])
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


_PROFILE_STEP = """
import json, sys
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])
from fcn_tf1 import compare
from ours_analysis import step_flops
from test_bench import TINY
spec = TINY.replace(batch_size=1)
images, labels, _ = compare.read_void_batch(sys.argv[3], 1)
print(json.dumps(step_flops(spec, sys.argv[3], images[:, :64, :64], labels[:, :64, :64], 1, 1)))
"""


def test_profiler_flops_equal_the_analytic_count(default_data):
    # In a fresh process without oneDNN's graph rewrites (TF_ENABLE_ONEDNN_OPTS=0, read at
    # import): on AVX-512 hosts they fuse ops and the profiler then misses ~0.2 % of the
    # conv FLOPs (measured on the stop-18 host: 246373248 against 246846336).
    import json
    import os
    import subprocess
    here = pathlib.Path(__file__).resolve().parent
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0")
    done = subprocess.run([sys.executable, "-c", _PROFILE_STEP, str(here.parent / "bench"),
                           str(here), str(default_data)], env=env, capture_output=True,
                          text=True, timeout=300, check=True)
    flops = json.loads(done.stdout.strip().splitlines()[-1])
    spec = TINY.replace(batch_size=1)
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


def test_bench_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--quick", "--json", "--threads", "--inter-threads", "--data"):
        assert option in out


def test_bench_without_the_bench_directory(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "BENCH_DIR", tmp_path / "bench")
    assert cli.main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fcn-tf1: error: ") and "run_bench.py" in err[0]
