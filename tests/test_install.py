"""The built wheel, installed in a fresh venv, trains from any folder and writes nothing
into site-packages (the sample ships inside the package; prepared data goes to the cache)."""
import os
import pathlib
import subprocess
import sys
import sysconfig

import pytest

from tests.support import fuzz_inputs

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def _run(argv, **kwargs):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, (argv, proc.stdout[-2000:], proc.stderr[-2000:])
    return proc


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if "__pycache__" not in p.parts)


def test_wheel_in_a_fresh_venv_trains_from_another_folder(tmp_path):
    wheelhouse = tmp_path / "wheelhouse"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(wheelhouse), str(REPO_ROOT)])
    wheel = next(wheelhouse.glob("fcn_tf1-*.whl"))
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    site = pathlib.Path(_run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # TensorFlow and the other dependencies come from this interpreter's environment (a
    # path entry, so its editable install of fcn_tf1 is not activated): only the wheel is new
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)])
    before = _tree(site)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = dict(os.environ, FCN_TF1_CACHE=str(tmp_path / "cache"), PYTHONPATH="")
    located = _run([str(python), "-c", "import fcn_tf1.paths as p; print(p.DEFAULT_DATA)"],
                   cwd=work, env=env).stdout.strip()
    assert located.startswith(str(site)) and pathlib.Path(located).is_file(), located
    tiny = ["--max-steps", "3", "--width", "4", "--crop-size", "64", "--batch-size", "2",
            "--eval-every-steps", "0", "--num-prediction-pngs", "1"]
    _run([str(venv / "bin" / "fcn-tf1"), "train", "--train-dir", "run"] + tiny, cwd=work,
         env=env)
    assert (work / "run" / "model.ckpt-3.index").is_file()
    assert (work / "run" / "metrics.json").is_file()
    # a released layout given with --data-dir is prepared into the cache, keyed by its folder
    root, _ = fuzz_inputs.make_root(tmp_path / "released", count=4)
    _run([str(venv / "bin" / "fcn-tf1"), "train", "--train-dir", "run2", "--data-dir",
          str(root), "--val-fraction", "0"] + tiny[:-4], cwd=work, env=env)
    prepared = list((tmp_path / "cache").glob("siftflow_trainval_*.h5"))
    assert len(prepared) == 1, prepared
    assert _tree(site) == before  # nothing written into the installed package
