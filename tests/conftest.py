"""Shared fixtures.

Tests that need the real SIFT Flow data read it from ``../shared/siftflow``
(relative to the repository root, or $FCN_TF1_SIFTFLOW) and skip with a
visible reason where it is absent; CI has it.
"""
import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SIFTFLOW_ROOT = pathlib.Path(
    os.environ.get("FCN_TF1_SIFTFLOW", REPO_ROOT.parent / "shared" / "siftflow"))
DEFAULT_DATA = REPO_ROOT / "data" / "siftflow_sample.h5"


@pytest.fixture(scope="session")
def siftflow_root():
    """The real SIFT Flow trainval root; skips where it is not on this machine."""
    if not (SIFTFLOW_ROOT / "trainval.txt").is_file():
        pytest.skip(f"real SIFT Flow data not found at {SIFTFLOW_ROOT} "
                    "(set FCN_TF1_SIFTFLOW to its root)")
    return SIFTFLOW_ROOT


@pytest.fixture(scope="session")
def default_data():
    """The embedded default dataset (a small real SIFT Flow sample in data/)."""
    if not DEFAULT_DATA.is_file():
        pytest.fail(f"embedded default data missing: {DEFAULT_DATA}")
    return DEFAULT_DATA
