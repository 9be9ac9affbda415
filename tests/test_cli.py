"""Command-line conventions: version, usage of each front door, one spelling for outputs."""
import subprocess
import sys

import pytest

from fcn_tf1 import __version__, cli

REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(f"fcn_tf1 {__version__} (TensorFlow ")


def test_run_train_shows_its_own_usage():
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "run_train.py"), "--bogus"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: run_train.py ")
    assert "run_train.py: error: unrecognized arguments: --bogus" in proc.stderr
    assert "fcn-tf1" not in proc.stderr


@pytest.mark.parametrize("argv", [["--help"]] + [[name, "--help"] for name in (
    "prepare", "train", "cluster-local", "eval", "predict", "export", "compare", "bench")])
def test_every_help_page_renders(argv, capsys):
    # argparse expands % in help texts: a stray one (e.g. "79 % pixel") breaks --help
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("usage: fcn-tf1")


def test_run_train_help_lists_the_presets_and_variants(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main_train(["--help"])
    assert stop.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "siftflow-cpu-60min-balanced:" in out and "keeping 79 % validation" in out
    assert "fcn8s +pool3, fcn4s +pool2" in out


@pytest.mark.parametrize("command", [
    ["eval", "--train-dir", "R"], ["compare"], ["bench"],
    ["predict", "--train-dir", "R", "IMAGE"], ["export", "--train-dir", "R"]])
def test_every_output_is_spelled_out(command):
    """``--out`` names the output of every command; the older spellings still parse."""
    parser = cli.build_parser()
    args = parser.parse_args(command + ["--out", "X"])
    assert str(args.out) == "X"
    old = {"eval": "--json", "compare": "--json", "bench": "--json", "predict": "--out-dir"}
    if command[0] in old:
        assert str(parser.parse_args(command + [old[command[0]], "Y"]).out) == "Y"


def test_a_stopped_run_exits_with_128_plus_the_signal():
    assert cli.stopped_exit_code(None) == 0
    assert cli.stopped_exit_code("SIGTERM") == 143
    assert cli.stopped_exit_code("SIGINT") == 130
