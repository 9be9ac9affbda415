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


def _load_example():
    """examples/seed_answer.py as a module (it runs nothing on import)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "seed_answer_example", REPO_ROOT / "examples" / "seed_answer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_loss_is_zero_on_an_all_void_batch_and_the_mean_otherwise():
    import numpy as np
    import tensorflow as tf

    example = _load_example()
    tf1 = tf.compat.v1
    rng = np.random.default_rng(0)
    logits_np = rng.normal(size=(2, 4, 5, 33)).astype(np.float32)
    all_void = np.full((2, 4, 5), 255, dtype=np.int64)
    some_void = rng.integers(0, 33, size=(2, 4, 5)).astype(np.int64)
    some_void[0, :2] = 255
    with tf.Graph().as_default():
        logits = tf1.placeholder(tf.float32, [None, 4, 5, 33])
        labels = tf1.placeholder(tf.int64, [None, 4, 5])
        losses = {reshape: example.masked_mean_loss(logits, labels, reshape=reshape)
                  for reshape in (True, False)}
        grads = {reshape: tf.gradients(loss, logits)[0] for reshape, loss in losses.items()}
        with tf1.Session() as session:
            for reshape in (True, False):
                value, grad = session.run([losses[reshape], grads[reshape]],
                                          {logits: logits_np, labels: all_void})
                assert math.isfinite(value) and value == 0.0, (reshape, value)
                assert np.all(grad == 0.0), reshape
                value = session.run(losses[reshape], {logits: logits_np, labels: some_void})
                # the mean over the valid pixels only, computed here in numpy
                shifted = logits_np - logits_np.max(axis=-1, keepdims=True)
                log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
                valid = some_void != 255
                picked = np.take_along_axis(log_p, np.where(valid, some_void, 0)[..., None],
                                            axis=-1)[..., 0]
                expected = -picked[valid].mean()
                assert math.isclose(value, expected, rel_tol=1e-5), (reshape, value, expected)
