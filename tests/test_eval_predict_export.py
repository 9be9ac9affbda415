"""eval, predict and export on a checkpoint of a short real training run."""
import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from fcn_tf1 import batches, checkpoints, cli, config as config_lib, h5data, load_run, losses, train


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, default_data):
    train_dir = tmp_path_factory.mktemp("run")
    cfg = config_lib.RunConfig(data=str(default_data), width=4, crop_size=64, batch_size=4,
                               max_steps=6, save_every_steps=0, save_every_secs=0,
                               log_every_steps=0, image_summary_every_steps=0,
                               num_prediction_pngs=0)
    train.train(cfg, train_dir, log=lambda *a: None)
    return train_dir


def test_eval_json_on_a_checkpoint(trained_run, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    assert cli.main(["eval", "--train-dir", str(trained_run), "--json", str(out),
                     "--batch-size", "3"]) == 0
    metrics = json.loads(out.read_text())
    assert set(metrics) == {"pixel_accuracy", "mean_accuracy", "mean_iou",
                            "mean_iou_gt_or_predicted", "conventions", "source",
                            "frequency_weighted_iou", "num_images", "classes_evaluated",
                            "per_class", "confusion_matrix", "prior_correction"}
    assert metrics["num_images"] == 8  # the sample's validation split
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (33, 33)
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "frequency_weighted_iou"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["pixel_accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert "pixel accuracy" in capsys.readouterr().out


def test_eval_from_released_files_matches_hdf5(trained_run, siftflow_root, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    val_list = pathlib.Path(__file__).resolve().parents[1] / "data" / "siftflow_sample_val.txt"
    assert cli.main(["eval", "--train-dir", str(trained_run), "--json", str(a)]) == 0
    assert cli.main(["eval", "--train-dir", str(trained_run), "--json", str(b), "--data-dir",
                     str(siftflow_root), "--names-file", str(val_list)]) == 0
    assert json.loads(a.read_text())["confusion_matrix"] == \
        json.loads(b.read_text())["confusion_matrix"]


def test_eval_errors_are_one_line(trained_run, tmp_path, capsys):
    assert cli.main(["eval", "--train-dir", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert cli.main(["eval", "--train-dir", str(trained_run), "--checkpoint",
                     str(tmp_path / "nope")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_predict_writes_pngs_of_the_input_size(trained_run, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (250, 333, 3), dtype=np.uint8)).save(inputs / "odd.png")
    Image.fromarray(rng.integers(0, 255, (40, 60), dtype=np.uint8)).save(inputs / "gray.jpg")
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    status = cli.main(["predict", "--train-dir", str(trained_run), "--out-dir", str(out),
                       str(inputs)])
    err = capsys.readouterr().err
    assert status == 1 and "broken.jpg" in err
    class_map = Image.open(out / "odd.png")
    classes = np.array(class_map)
    assert classes.shape == (250, 333) and classes.dtype == np.uint8 and classes.max() <= 32
    # an indexed PNG: the values are the classes, its palette holds their colours
    from fcn_tf1 import visualize
    assert class_map.mode == "P"
    palette = np.array(class_map.getpalette()[:3 * 33], np.uint8).reshape(33, 3)
    np.testing.assert_array_equal(palette, visualize.PALETTE)
    assert np.array(Image.open(out / "gray.png")).shape == (40, 60)
    color = Image.open(out / "odd_color.png")
    assert color.mode == "RGB" and color.height >= 250 and color.width >= 333
    assert sorted(p.name for p in out.iterdir()) == [
        "gray.png", "gray_color.png", "odd.png", "odd_color.png"]


def test_predict_output_names_stay_inside_out_dir(tmp_path):
    from fcn_tf1 import predict
    stems = predict.output_stems(["../../etc/passwd.png", "a/x.png", "b/x.png", ".hidden.png"])
    assert stems == ["passwd", "x", "x_2", "hidden"]
    assert all("/" not in s and not s.startswith(".") for s in stems)


def test_export_equals_session_predictions(trained_run, default_data, tmp_path):
    export_dir = tmp_path / "saved"
    assert cli.main(["export", "--train-dir", str(trained_run), "--out", str(export_dir)]) == 0
    images, _, _ = next(batches.iterate_batches(default_data, [0, 5, 9], 3))
    odd = images[:, :200, :250]  # any size, not a multiple of 32
    with load_run.open_trained(trained_run) as (_, session, net, _):
        expected = session.run(net.predictions, {net.images: odd})
        expected_prob = session.run(net.probabilities, {net.images: odd})
    loaded = tf.saved_model.load(str(export_dir))  # eager TF2, no compat.v1
    out = loaded.signatures["serving_default"](images=tf.constant(odd.astype(np.uint8)))
    assert out["classes"].dtype == tf.int32 and out["classes"].shape == (3, 200, 250)
    assert out["probabilities"].shape == (3, 200, 250, 33)
    np.testing.assert_array_equal(out["classes"].numpy(), expected)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected_prob, atol=1e-5)
    assert cli.main(["export", "--train-dir", str(trained_run), "--out", str(export_dir)]) == 2


def _probabilities(train_dir, images, test_scales=None, test_flip=False):
    with load_run.open_trained(train_dir, None, test_scales, test_flip) as (_, session, net, _):
        return session.run(net.probabilities, {net.images: images})


def test_test_time_views_average_the_single_view_graphs(trained_run, default_data):
    # a run at input scale 1: views at 1 and 1.25 = the plain graph and a graph built at 1.25
    images = next(batches.iterate_batches(default_data, [0, 1], 2))[0]
    plain = _probabilities(trained_run, images)
    np.testing.assert_allclose(_probabilities(trained_run, images, test_scales=(1.0,)), plain,
                               atol=1e-6)
    config = config_lib.load(trained_run)
    with tf.Graph().as_default():
        from fcn_tf1 import graph
        net = graph.build_inference_graph(config.replace(input_scale=1.25))
        with tf.compat.v1.Session() as session:
            checkpoints.restore_model(session, tf.compat.v1.train.latest_checkpoint(str(trained_run)))
            larger = session.run(net.probabilities, {net.images: images})
    assert np.abs(larger - plain).max() > 1e-3  # the second view differs from the first
    both = _probabilities(trained_run, images, test_scales=(1.0, 1.25))
    np.testing.assert_allclose(both, (plain + larger) / 2, atol=1e-5)
    np.testing.assert_allclose(both.sum(-1), 1.0, atol=1e-5)

    # mirrored views are mirrored back: the flip-averaged prediction of the mirrored
    # images is the mirror of the flip-averaged prediction of the images
    flipped = _probabilities(trained_run, images, test_flip=True)
    of_mirror = _probabilities(trained_run, images[:, :, ::-1].copy(), test_flip=True)
    np.testing.assert_allclose(of_mirror, flipped[:, :, ::-1], atol=1e-5)
    assert np.abs(flipped - plain).max() > 1e-3


def test_eval_with_test_time_views(trained_run, tmp_path, capsys):
    out = tmp_path / "tta.json"
    assert cli.main(["eval", "--train-dir", str(trained_run), "--json", str(out),
                     "--test-scales", "1,0.75", "--test-flip"]) == 0
    assert "4 views averaged: input scale 1, 0.75, each also mirrored" in capsys.readouterr().out
    assert json.loads(out.read_text())["num_images"] == 8
    for words, message in ((["--test-scales", "1,1"], "a scale is repeated"),
                           (["--test-scales", "9"], "outside [0.1, 4.0]")):
        assert cli.main(["eval", "--train-dir", str(trained_run)] + words) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["eval", "--train-dir", str(trained_run), "--test-scales", "1,x"])
    assert "expected comma-separated numbers" in capsys.readouterr().err


def test_predict_with_test_time_views(trained_run, default_data, tmp_path):
    images = next(batches.iterate_batches(default_data, [3], 1))[0]
    Image.fromarray(images[0].astype(np.uint8)).save(tmp_path / "scene.png")
    out = tmp_path / "out"
    assert cli.main(["predict", "--train-dir", str(trained_run), "--out-dir", str(out),
                     "--test-scales", "1,0.75", "--test-flip", str(tmp_path / "scene.png")]) == 0
    expected = _probabilities(trained_run, images, (1.0, 0.75), True)[0].argmax(-1)
    np.testing.assert_array_equal(np.array(Image.open(out / "scene.png")), expected)
    single = _probabilities(trained_run, images)[0].argmax(-1)
    assert (expected != single).any()  # the views changed some pixels


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_prior_correction_moves_the_argmax_by_the_log_priors(trained_run, default_data):
    images = next(batches.iterate_batches(default_data, [0, 1, 2], 3))[0]
    with load_run.open_trained(trained_run) as (config, session, net, _):
        assert config.prior_correction == 0 and config.class_priors is None
        raw_logits, raw_predictions = session.run([net.logits, net.predictions],
                                                  {net.images: images})
    with load_run.open_trained(trained_run, prior_correction=2.0) as (config, session, net, _):
        logits, predictions, probabilities = session.run(
            [net.logits, net.predictions, net.probabilities], {net.images: images})
    # the priors are counted on the run's training split, void excluded
    with h5data.H5Dataset(default_data) as dataset:
        train_indices, _ = dataset.split(config.val_fraction)
        counts = dataset.label_counts(train_indices)
    priors = np.array(config.class_priors)
    np.testing.assert_allclose(priors, counts / counts.sum())
    np.testing.assert_allclose(logits, raw_logits, atol=1e-5)  # what the loss sees: unchanged
    seen = priors > 0
    offsets = np.where(seen, -2.0 * np.log(np.where(seen, priors, 1.0)), 0.0)
    offsets[~seen] = offsets[seen].min()  # never-seen classes are not boosted
    adjusted = raw_logits + offsets
    close = np.sort(adjusted, -1)[..., -1] - np.sort(adjusted, -1)[..., -2] < 1e-4
    np.testing.assert_array_equal(predictions[~close], adjusted.argmax(-1)[~close])
    np.testing.assert_allclose(probabilities, _softmax(adjusted), atol=1e-5)
    assert (predictions != raw_predictions).mean() > 0.01  # rare classes won pixels


def test_eval_prior_correction_option(trained_run, tmp_path, capsys):
    plain, corrected = tmp_path / "plain.json", tmp_path / "corrected.json"
    assert cli.main(["eval", "--train-dir", str(trained_run), "--json", str(plain)]) == 0
    assert cli.main(["eval", "--train-dir", str(trained_run), "--json", str(corrected),
                     "--prior-correction", "2"]) == 0
    assert "; prior correction 2" in capsys.readouterr().out
    assert (json.loads(plain.read_text())["confusion_matrix"]
            != json.loads(corrected.read_text())["confusion_matrix"])
    for value, message in (("-1", "prior_correction=-1.0 must be >= 0"),
                           ("nan", "must be finite")):
        assert cli.main(["eval", "--train-dir", str(trained_run),
                         "--prior-correction", value]) == 2
        assert message in capsys.readouterr().err


def test_a_run_resumed_with_prior_correction_keeps_it(trained_run, default_data, tmp_path):
    # resumed with --prior-correction, the run counts and stores the priors; eval, predict
    # and export all predict with them
    train_dir = tmp_path / "corrected"
    cfg = config_lib.load(trained_run).replace(max_steps=2)
    train.train(cfg, train_dir, log=lambda *a: None)
    assert config_lib.load(train_dir).class_priors is None
    train.train(cfg.replace(max_steps=3, prior_correction=1.5), train_dir,
                explicit={"max_steps", "prior_correction"}, log=lambda *a: None)
    saved = config_lib.load(train_dir)
    assert saved.prior_correction == 1.5
    assert json.loads((train_dir / "metrics.json").read_text())["prior_correction"] == 1.5
    with load_run.open_trained(trained_run, prior_correction=1.5) as (counted, _, _, _):
        assert saved.class_priors == counted.class_priors
    assert sum(saved.class_priors) == pytest.approx(1.0)

    images = next(batches.iterate_batches(default_data, [4, 7], 2))[0]
    with load_run.open_trained(train_dir) as (_, session, net, _):
        corrected, probabilities, logits = session.run(
            [net.predictions, net.probabilities, net.logits], {net.images: images})
    adjusted = logits + losses.prior_offsets(saved.class_priors, 1.5)
    np.testing.assert_allclose(probabilities, _softmax(adjusted), atol=1e-5)
    assert (corrected != logits.argmax(-1)).any()
    export_dir = tmp_path / "saved"
    assert cli.main(["export", "--train-dir", str(train_dir), "--out", str(export_dir)]) == 0
    out = tf.saved_model.load(str(export_dir)).signatures["serving_default"](
        images=tf.constant(images.astype(np.uint8)))
    np.testing.assert_array_equal(out["classes"].numpy(), corrected)
    np.testing.assert_allclose(out["probabilities"].numpy(), probabilities, atol=1e-5)
    Image.fromarray(images[0].astype(np.uint8)).save(tmp_path / "scene.png")
    for tau, expected in (("1.5", corrected[0]), ("0", logits[0].argmax(-1))):
        out_dir = tmp_path / f"predicted-{tau}"
        assert cli.main(["predict", "--train-dir", str(train_dir), "--out-dir", str(out_dir),
                         "--prior-correction", tau, str(tmp_path / "scene.png")]) == 0
        np.testing.assert_array_equal(np.array(Image.open(out_dir / "scene.png")), expected)


def test_prior_correction_without_the_data_file_names_it(trained_run, tmp_path, capsys):
    moved = tmp_path / "run"
    moved.mkdir()
    for path in trained_run.iterdir():
        if path.is_file():
            (moved / path.name).write_bytes(path.read_bytes())
    cfg = config_lib.load(moved)
    config_lib.save(cfg.replace(data=str(tmp_path / "gone.h5")), moved)
    assert cli.main(["eval", "--train-dir", str(moved), "--prior-correction", "1"]) == 2
    err = capsys.readouterr().err
    assert "--prior-correction: the run stores no class priors" in err and "gone.h5" in err


def _copy_run(source, target):
    import shutil
    shutil.copytree(source, target)
    return target


def test_eval_predict_export_without_the_checkpoint_state_file(trained_run, default_data,
                                                                tmp_path, capsys):
    """The state file gone: eval, predict and export use the newest complete checkpoint,
    as training does when it resumes (checkpoints.latest is the one finder)."""
    run = _copy_run(trained_run, tmp_path / "run")
    (run / "checkpoint").unlink()
    assert checkpoints.latest(run) == str(run / "model.ckpt-6")
    assert cli.main(["eval", "--train-dir", str(trained_run), "--json",
                     str(tmp_path / "a.json")]) == 0
    assert cli.main(["eval", "--train-dir", str(run), "--json", str(tmp_path / "b.json")]) == 0
    before = json.loads((tmp_path / "a.json").read_text())
    after = json.loads((tmp_path / "b.json").read_text())
    assert after["confusion_matrix"] == before["confusion_matrix"]
    with h5data.H5Dataset(default_data) as data:
        Image.fromarray(data.image(0)).save(tmp_path / "one.png")
    assert cli.main(["predict", "--train-dir", str(run), "--out-dir", str(tmp_path / "pred"),
                     str(tmp_path / "one.png")]) == 0
    assert (tmp_path / "pred" / "one.png").is_file()
    assert cli.main(["export", "--train-dir", str(run), "--out", str(tmp_path / "sm")]) == 0
    assert (tmp_path / "sm" / "saved_model.pb").is_file()
    assert "model.ckpt-6" in capsys.readouterr().out


def test_a_corrupt_newest_checkpoint_is_one_line_in_every_command(trained_run, default_data,
                                                                   tmp_path, capsys):
    run = _copy_run(trained_run, tmp_path / "run")
    data_file = next(run.glob("model.ckpt-6.data-*"))
    blob = bytearray(data_file.read_bytes())
    blob[100:200] = bytes(100)
    data_file.write_bytes(bytes(blob))
    with h5data.H5Dataset(default_data) as data:
        Image.fromarray(data.image(0)).save(tmp_path / "one.png")
    capsys.readouterr()
    for argv in (["eval", "--train-dir", str(run)],
                 ["predict", "--train-dir", str(run), "--out-dir", str(tmp_path / "pred"),
                  str(tmp_path / "one.png")],
                 ["export", "--train-dir", str(run), "--out", str(tmp_path / "sm")]):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, (argv, err)
        assert err[0].startswith(f"fcn-tf1: error: {run / 'model.ckpt-6'}: unreadable "
                                 "checkpoint"), (argv, err)
    assert not (tmp_path / "sm").exists()  # a failed export leaves nothing under its name


def test_eval_never_scores_training_images_unless_asked(trained_run, default_data, tmp_path,
                                                        capsys):
    """--data (the run's own file) and --data-dir without --split score the images the run
    did not train on: the same 8 validation images as the default; training images need
    an explicit choice, and then a warning says so."""
    def scored(*words):
        out = tmp_path / "scored.json"
        assert cli.main(["eval", "--train-dir", str(trained_run), "--json", str(out)]
                        + list(words)) == 0
        return json.loads(out.read_text())

    default = scored()
    assert default["num_images"] == 8
    from_file = scored("--data", str(default_data))
    assert from_file["num_images"] == 8
    assert from_file["confusion_matrix"] == default["confusion_matrix"]
    assert "did not train on" in from_file["source"]
    capsys.readouterr()
    everything = scored("--data", str(default_data), "--include-training-images")
    assert everything["num_images"] == 56
    assert "48 of the 56 images" in capsys.readouterr().out  # the warning
    # a file holding only training images: nothing left to score without the explicit flag
    with h5data.H5Dataset(default_data) as data:
        train_indices = data.split(0.1)[0]
        names = [data.names[i] for i in train_indices]
    root = tmp_path / "root"
    from tests.support import fuzz_inputs
    released, _ = fuzz_inputs.make_root(root, count=56)
    (released / "only_training.txt").write_text("\n".join(names[:3]) + "\n")
    (released / "trainval.txt").write_text("\n".join(names[:3]) + "\n")
    capsys.readouterr()
    assert cli.main(["eval", "--train-dir", str(trained_run), "--data-dir",
                     str(released)]) == 2
    err = capsys.readouterr().err
    assert "all 3 images are training images of the run" in err and len(err.splitlines()) == 1
    assert cli.main(["eval", "--train-dir", str(trained_run), "--data-dir", str(released),
                     "--split", "only_training"]) == 0
    assert "3 of the 3 images" in capsys.readouterr().out


def test_predict_never_overwrites_inputs_or_earlier_outputs(trained_run, default_data, tmp_path,
                                                            capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    with h5data.H5Dataset(default_data) as data:
        Image.fromarray(data.image(0)).save(folder / "holiday.png")
    original = (folder / "holiday.png").read_bytes()
    # the output folder is the input folder: holiday.png would become its class map
    assert cli.main(["predict", "--train-dir", str(trained_run), "--out", str(folder),
                     str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is one of the input images" in err[0], err
    assert (folder / "holiday.png").read_bytes() == original
    assert cli.main(["predict", "--train-dir", str(trained_run), "--out", str(folder),
                     "--overwrite", str(folder)]) == 2  # --overwrite never covers inputs
    assert (folder / "holiday.png").read_bytes() == original
    out = tmp_path / "out"
    assert cli.main(["predict", "--train-dir", str(trained_run), "--out", str(out),
                     str(folder)]) == 0
    first = (out / "holiday.png").read_bytes()
    (out / "holiday_color.png").write_bytes(b"mine")
    capsys.readouterr()
    assert cli.main(["predict", "--train-dir", str(trained_run), "--out", str(out),
                     str(folder)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "holiday_color.png").read_bytes() == b"mine"
    assert cli.main(["predict", "--train-dir", str(trained_run), "--out", str(out),
                     "--overwrite", str(folder)]) == 0
    assert (out / "holiday.png").read_bytes() == first
    assert (out / "holiday_color.png").read_bytes() != b"mine"
