"""Devices: GPU options and towers. The GPU tests run where TensorFlow sees a GPU and skip,
saying so, where it does not (this project's CI machines have none)."""
import pytest
import tensorflow as tf

from fcn_tf1 import cli
from fcn_tf1.errors import ConfigError
from fcn_tf1.parallel import devices

GPUS = len(tf.config.list_physical_devices("GPU"))
needs_two_gpus = pytest.mark.skipif(GPUS < 2, reason=f"needs 2 GPUs, TensorFlow sees {GPUS}")
needs_a_gpu = pytest.mark.skipif(GPUS < 1, reason="needs a GPU, TensorFlow sees none")
TINY = ["--width", "4", "--crop-size", "64", "--batch-size", "2", "--max-steps", "2",
        "--eval-every-steps", "0", "--num-prediction-pngs", "0"]


def test_gpu_memory_growth_is_on_unless_turned_off():
    assert devices.session_config().gpu_options.allow_growth is True
    assert devices.session_config(gpu_memory_growth=False).gpu_options.allow_growth is False


@pytest.mark.skipif(GPUS >= 2, reason="this machine has GPUs: the refusal cannot happen")
def test_towers_without_gpus_are_refused_unless_virtual(capsys, tmp_path):
    with pytest.raises(ConfigError, match=rf"--towers 2: TensorFlow sees {GPUS} GPU"):
        devices.tower_devices(2)
    virtual = devices.tower_devices(2, virtual_cpus=True)
    assert virtual.names == ["/cpu:0", "/cpu:1"] and virtual.variables_device == "/cpu:0"
    assert cli.main(["train", "--towers", "2", "--train-dir", str(tmp_path / "r")] + TINY) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--virtual-cpu-towers" in err[0]


def test_the_log_names_the_devices(tmp_path, capsys):
    assert cli.main(["train", "--train-dir", str(tmp_path / "r"), "--max-steps", "1"]
                    + TINY[:6]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("devices: "))
    if GPUS:
        assert f"{GPUS} GPU(s): GPU:0" in line
    else:
        assert line == "devices: CPU only (no GPU visible to TensorFlow)"


@needs_a_gpu
def test_training_runs_on_the_gpu(tmp_path):
    with tf.Graph().as_default():
        with tf.compat.v1.Session(config=devices.session_config()) as session:
            placed = session.list_devices()
    assert any(d.device_type == "GPU" for d in placed)
    assert cli.main(["train", "--train-dir", str(tmp_path / "gpu")] + TINY) == 0


@needs_two_gpus
@pytest.mark.parametrize("variables_on", ["cpu", "gpu"])
def test_towers_on_two_gpus(tmp_path, variables_on):
    chosen = devices.tower_devices(2, variables_on=variables_on)
    assert chosen.names == ["/gpu:0", "/gpu:1"]
    assert cli.main(["train", "--towers", "2", "--tower-variables", variables_on,
                     "--train-dir", str(tmp_path / variables_on)] + TINY) == 0
