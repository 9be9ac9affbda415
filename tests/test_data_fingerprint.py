"""The data file a run trains on is fingerprinted in config.json; a resume on another file is
refused unless asked for. `fcn-tf1 prepare` never replaces a file unasked."""
import json
import shutil

import h5py
import pytest

from fcn_tf1 import cli, h5data, run_setup
from fcn_tf1 import config as config_lib
from fcn_tf1.errors import ConfigError
from tests.support.fuzz_inputs import make_root

quiet = lambda *a: None  # noqa: E731


def _other_data(default_data, tmp_path):
    """The sample with one name changed: same size, same images, another file."""
    other = tmp_path / "other.h5"
    shutil.copyfile(default_data, other)
    with h5py.File(other, "r+") as f:
        names = f["names"].asstr()[()].tolist()
        names[0] = names[0][:-1] + ("x" if names[0][-1] != "x" else "y")
        f["names"][0] = names[0]
    return other


def test_fingerprint_is_stored_checked_and_can_be_overridden(default_data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    requested = config_lib.RunConfig(data=str(default_data), max_steps=2)
    first = run_setup.prepare_run(requested, run, log=quiet)
    stored = config_lib.load(run).data_fingerprint
    assert stored == first.config.data_fingerprint == h5data.fingerprint(default_data)
    size, count, digest = stored.split(":")
    assert int(size) == default_data.stat().st_size and int(count) > 0 and len(digest) == 32

    other = _other_data(default_data, tmp_path)
    assert h5data.fingerprint(other) != stored
    moved = config_lib.RunConfig(data=str(other), max_steps=2)
    with pytest.raises(ConfigError, match=r"config.json: the run was trained on a data file "
                                          r"with fingerprint .*--allow-other-data") as caught:
        run_setup.prepare_run(moved, run, explicit={"data"}, log=quiet)
    assert "\n" not in str(caught.value)
    assert config_lib.load(run).data_fingerprint == stored  # untouched

    allowed = moved.replace(allow_other_data=True)
    resumed = run_setup.prepare_run(allowed, run, explicit={"data", "allow_other_data"},
                                    log=quiet)
    assert resumed.resuming and resumed.config.data == str(other)
    saved = config_lib.load(run)
    assert saved.data_fingerprint == h5data.fingerprint(other)
    assert saved.allow_other_data is False  # the override held for that start only


def test_config_without_a_fingerprint_still_loads_and_gets_one(default_data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    old = config_lib.RunConfig(data=str(default_data)).to_dict()
    del old["data_fingerprint"], old["allow_other_data"]
    (run / config_lib.CONFIG_NAME).write_text(json.dumps(old))
    assert config_lib.load(run).data_fingerprint is None
    resumed = run_setup.prepare_run(config_lib.RunConfig(data=str(default_data)), run, log=quiet)
    assert resumed.resuming
    assert config_lib.load(run).data_fingerprint == h5data.fingerprint(default_data)


def test_a_non_string_fingerprint_is_a_config_error(tmp_path):
    values = dict(config_lib.RunConfig().to_dict(), data_fingerprint=12)
    (tmp_path / config_lib.CONFIG_NAME).write_text(json.dumps(values))
    with pytest.raises(ConfigError, match="data_fingerprint must be a string or null"):
        config_lib.load(tmp_path)


def test_prepare_refuses_to_replace_a_file_unless_overwrite(tmp_path, capsys):
    root, _ = make_root(tmp_path, count=2)
    out = tmp_path / "out" / "data.h5"
    out.parent.mkdir()
    out.write_bytes(b"previous")
    args = ["prepare", "--data-dir", str(root), "--out", str(out), "--quiet"]
    assert cli.main(args + ["--processes", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fcn-tf1: error: {out}: already exists; pass --overwrite to replace it"]
    assert out.read_bytes() == b"previous"
    # --workers is the hidden earlier name of --processes
    assert cli.main(args + ["--workers", "1", "--overwrite"]) == 0
    with h5data.H5Dataset(out) as data:
        assert len(data) == 2
    assert "--workers" not in cli.build_parser().parse_args(
        ["prepare", "--data-dir", "x", "--out", "y"]).__dict__
    assert sorted(p.name for p in out.parent.iterdir()) == ["data.h5"]


def test_fingerprint_reads_labels_as_stored(default_data, tmp_path):
    """A bad label is reported when training reaches it (naming its image), not at start."""
    from tests.support import harness
    poisoned = tmp_path / "poisoned.h5"
    harness.poison_label(default_data, poisoned, at_batch=0)
    assert h5data.fingerprint(poisoned) != h5data.fingerprint(default_data)
