"""examples/seed_answer.py runs as a user runs it and prints two equal, finite losses."""
import math
import pathlib
import re
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_seed_answer_runs_and_both_losses_agree():
    proc = subprocess.run([sys.executable, "examples/seed_answer.py"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    found = {name: float(value) for name, value in
             re.findall(r"^loss (reshape|reshape-free): (\S+)$", out, flags=re.MULTILINE)}
    assert set(found) == {"reshape", "reshape-free"}, out
    assert all(math.isfinite(v) and v > 0 for v in found.values()), found
    assert math.isclose(found["reshape"], found["reshape-free"], rel_tol=1e-6), found
    package = float(re.search(r"^fcn_tf1\.losses\.loss: (\S+)$", out, re.MULTILINE).group(1))
    assert math.isclose(package, found["reshape"], rel_tol=1e-6), out
    # every unported form of the original was really refused by this TensorFlow
    for what in ("tf.placeholder", "float32 labels", "positional (logits, labels)",
                 "unmasked void labels (CPU)"):
        assert f"original {what}: " in out, what
    assert "outside the valid range" in out
