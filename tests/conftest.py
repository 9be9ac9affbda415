"""Shared fixtures and the two test tiers.

Tests that need the real SIFT Flow data read it from ``../shared/siftflow``
(relative to the repository root, or $FCN_TF1_SIFTFLOW), CamVid from
``../shared/camvid`` (or $FCN_TF1_CAMVID); they skip with a visible reason
where it is absent.

Tiers (pytest.ini): a test is ``integration`` when it starts processes (a
trainer, a cluster, the CLI, a fuzzing child) or runs whole training runs;
the rest is the unit tier.
Test files of the harness mark themselves; the others are listed in
INTEGRATION below. ``slow`` tests run only when ``-m`` names them.
"""
import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SIFTFLOW_ROOT = pathlib.Path(
    os.environ.get("FCN_TF1_SIFTFLOW", REPO_ROOT.parent / "shared" / "siftflow"))
CAMVID_ROOT = pathlib.Path(
    os.environ.get("FCN_TF1_CAMVID", REPO_ROOT.parent / "shared" / "camvid"))
DEFAULT_DATA = REPO_ROOT / "data" / "siftflow_sample.h5"


def _shared_root(root, env, what):
    """``root`` when its list file is there; a visible skip otherwise."""
    if not (root / ("trainval.txt" if env == "FCN_TF1_SIFTFLOW" else "train.txt")).is_file():
        pytest.skip(f"real {what} data not found at {root} (set {env} to its root)")
    return root


@pytest.fixture(scope="session")
def siftflow_root():
    """The real SIFT Flow trainval root; skips where it is not on this machine."""
    return _shared_root(SIFTFLOW_ROOT, "FCN_TF1_SIFTFLOW", "SIFT Flow")


@pytest.fixture(scope="session")
def camvid_root():
    """The real CamVid subset in SegNet's layout; skips where it is not on this machine."""
    return _shared_root(CAMVID_ROOT, "FCN_TF1_CAMVID", "CamVid")


@pytest.fixture(scope="session")
def default_data():
    """The embedded default dataset (a small real SIFT Flow sample in data/)."""
    if not DEFAULT_DATA.is_file():
        pytest.fail(f"embedded default data missing: {DEFAULT_DATA}")
    return DEFAULT_DATA


# The integration tier, by module and test name (every test of the module when the name is
# None): tests that start processes (run_train.py, `python -c` children, cluster tasks),
# and tests that run the whole training loop for many steps or for a time budget
# (train.train with checkpoints, resume, validation), the slowest in-process tests.
INTEGRATION = {
    "test_seed_answer.py": None,  # examples/seed_answer.py as a user runs it
    "test_bench_limits.py": {"test_kernel_floor_rows_add_up_and_cover_the_step",  # ~15 s
                             "test_report_leads_with_the_floor_and_prints_it"},
    "test_train.py": None,  # run_train.py in a subprocess, and whole runs: resume, seeds, NaN
    "test_distributed.py": {"test_launcher_stops_every_task_in_order",
                            "test_launcher_is_stopped_by_sigterm",
                            "test_one_ps_two_workers_on_localhost",  # 1 ps + 2 worker processes
                            "test_towers_train_and_eval"},  # a whole run with two towers
    "test_run_clock.py": {"test_time_budget_stops_saves_validates_and_resumes",  # 1.2 s budget
                         "test_poly_time_run_decays_to_the_end_of_its_budget"},  # 12 s budget
    "test_eval_predict_export.py": {"test_a_run_resumed_with_prior_correction_keeps_it",
                                    # several CLI runs each, on copies of the trained run
                                    "test_eval_never_scores_training_images_unless_asked",
                                    "test_predict_never_overwrites_inputs_or_earlier_outputs",
                                    "test_eval_predict_export_without_the_checkpoint_state_file",
                                    "test_a_corrupt_newest_checkpoint_is_one_line_in_every_command"},
    "test_datasets_e2e.py": None,  # whole runs on VOC-layout and CamVid data
    "test_warm_start.py": None,  # whole runs: FCN-32s, FCN-16s from it, the best checkpoint
    "test_cli.py": {"test_run_train_shows_its_own_usage"},  # run_train.py in a subprocess
    "test_gpu.py": {"test_the_log_names_the_devices", "test_training_runs_on_the_gpu",
                    "test_towers_on_two_gpus"},  # training runs
    "test_averaging.py": {"test_a_trained_run_is_scored_and_loaded_with_its_averaged_weights"},
    "test_prior_choice.py": {"test_a_run_predicts_with_the_correction_it_chose"},  # a whole run
    "test_api.py": {"test_the_public_api_trains_evaluates_predicts_exports"},  # a whole run
}


def _is_integration(item):
    names = INTEGRATION.get(item.path.name, ())
    return names is None or item.originalname in names


@pytest.hookimpl(tryfirst=True)  # before -m filters on the marks added here
def pytest_collection_modifyitems(config, items):
    for item in items:
        if _is_integration(item):
            item.add_marker(pytest.mark.integration)
    if "slow" in (config.getoption("markexpr") or ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]
