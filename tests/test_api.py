"""The public API of ``import fcn_tf1``: what a notebook user calls."""
import subprocess
import sys

import numpy as np
import tensorflow as tf
from PIL import Image

import fcn_tf1
from fcn_tf1 import h5data


def test_import_fcn_tf1_does_not_load_tensorflow():
    # the command line's --help and config checks must stay fast
    code = "import sys, fcn_tf1; print('tensorflow' in sys.modules, fcn_tf1.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == "False" and out[1] == fcn_tf1.__version__


def test_the_public_api_trains_evaluates_predicts_exports(tmp_path, default_data):
    assert set(fcn_tf1.__all__) <= set(dir(fcn_tf1))
    run = str(tmp_path / "run")  # plain strings work as paths
    config = fcn_tf1.RunConfig(data=str(default_data), width=4, crop_size=64, batch_size=2,
                               max_steps=2, save_every_steps=0, save_every_secs=0,
                               log_every_steps=0, image_summary_every_steps=0,
                               num_prediction_pngs=0, eval_every_steps=0)
    result = fcn_tf1.train_run(config, run, log=lambda *a: None)
    assert result["step"] == 2 and len(result["losses"]) == 2
    metrics = fcn_tf1.evaluate_run(run, log=lambda *a: None)
    assert metrics["num_images"] == 8
    assert metrics["pixel_accuracy"] == result["validation"]["pixel_accuracy"]
    with h5data.H5Dataset(default_data) as data:
        image = data.image(0)
    Image.fromarray(image).save(tmp_path / "one.png")
    written, failures = fcn_tf1.predict_images(run, tmp_path / "pred", [tmp_path / "one.png"])
    assert not failures and (tmp_path / "pred" / "one.png").is_file()
    fcn_tf1.export_saved_model(run, tmp_path / "sm")
    served = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"](
        images=tf.constant(image[None]))["classes"].numpy()[0]
    eager = fcn_tf1.EagerFCN.from_run(run)
    logits = eager(tf.constant(image[None], tf.float32)).numpy()[0]
    assert (np.argmax(logits, axis=-1) == served).mean() > 0.999
    # the graph-mode building blocks
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 64, 64, 3])
        labels = tf.compat.v1.placeholder(tf.int64, [None, 64, 64])
        logits = fcn_tf1.inference(images, num_classes=33, width=4)
        assert logits.shape.as_list() == [None, 64, 64, 33]
        assert fcn_tf1.loss(logits, labels).shape.as_list() == []
        assert fcn_tf1.predictions(logits).shape.as_list() == [None, 64, 64]
