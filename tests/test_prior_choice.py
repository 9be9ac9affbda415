"""--prior-correction-floor / --prior-correction-choice: the prior correction chosen at the
end of a run."""
import json

import pytest

from fcn_tf1 import cli, config as config_lib, evaluate, prior_choice, train
from fcn_tf1.errors import ConfigError


def _scores(*pixel_accuracies):
    return {tau: {"pixel_accuracy": p} for tau, p in zip(prior_choice.GRID, pixel_accuracies)}


def test_choose_takes_the_largest_correction_that_keeps_the_floor():
    assert prior_choice.choose(_scores(0.80, 0.795, 0.79, 0.789, 0.70), 0.79) == 0.2
    # not monotonic: the largest tau above the floor, wherever it is
    assert prior_choice.choose(_scores(0.80, 0.78, 0.791, 0.70), 0.79) == 0.2
    # nothing reaches the floor, or no pixel was scored: no correction
    assert prior_choice.choose(_scores(0.70, 0.60), 0.79) == 0.0
    assert prior_choice.choose(_scores(None, None), 0.79) == 0.0
    assert prior_choice.GRID[0] == 0.0 and prior_choice.GRID[-1] == 1.5


def test_a_floor_nothing_keeps_is_said_in_one_line():
    assert prior_choice.floor_missed(_scores(0.80, 0.79, 0.70), 0.1, 0.79) is None
    assert prior_choice.floor_missed(_scores(0.70), 0.0, 0.0) is None  # no floor asked
    line = prior_choice.floor_missed(_scores(0.789, 0.70), 0.0, 0.79)
    assert line.startswith("warning: no correction keeps pixel accuracy >= 79 % (78.90 % at "
                           "tau 0)") and "\n" not in line
    assert "no pixel scored" in prior_choice.floor_missed(_scores(None), 0.0, 0.79)


def _rows(*pixel_and_iou):
    return {tau: {"pixel_accuracy": p, "mean_iou": iou}
            for tau, (p, iou) in zip(prior_choice.GRID, pixel_and_iou)}


def test_choose_for_mean_iou_takes_the_best_mean_iou_that_keeps_the_floor():
    rows = _rows((0.82, 0.28), (0.81, 0.29), (0.80, 0.30), (0.78, 0.31), (0.70, 0.25))
    assert prior_choice.choose(rows, 0.0, "mean_iou") == 0.3  # no floor: the best mean IU
    assert prior_choice.choose(rows, 0.79, "mean_iou") == 0.2  # 0.3 costs the floor
    assert prior_choice.choose(rows, 0.79) == 0.2 and prior_choice.choose(rows, 0.70) == 0.4
    # a tie keeps the smaller correction; nothing keeps the floor: none
    assert prior_choice.choose(_rows((0.8, 0.3), (0.7, 0.3)), 0.0, "mean_iou") == 0.0
    assert prior_choice.choose(rows, 0.9, "mean_iou") == 0.0
    assert prior_choice.choose(_rows((None, None), (None, None)), 0.0, "mean_iou") == 0.0
    with pytest.raises(ValueError, match="'pixel'"):
        prior_choice.choose(rows, 0.0, "pixel")


def test_a_run_chooses_its_correction_with_a_floor_or_for_mean_iou():
    assert not config_lib.RunConfig().chooses_prior_correction
    assert config_lib.RunConfig(prior_correction_floor=0.79).chooses_prior_correction
    assert config_lib.RunConfig(prior_correction_choice="mean_iou").chooses_prior_correction
    with pytest.raises(ConfigError, match="prior_correction_choice"):
        config_lib.RunConfig(prior_correction_choice="pixel")


def test_the_floor_must_be_a_pixel_accuracy():
    for floor in (-0.1, 1.0, 79.0):
        with pytest.raises(ConfigError, match="prior_correction_floor"):
            config_lib.RunConfig(prior_correction_floor=floor)


def test_a_run_predicts_with_the_correction_it_chose(tmp_path, default_data, capsys):
    train_dir = tmp_path / "run"
    config = config_lib.RunConfig(
        data=str(default_data), width=4, crop_size=64, batch_size=2, max_steps=8,
        val_fraction=0.25, save_every_steps=0, save_every_secs=0, summary_every_steps=0,
        image_summary_every_steps=0, log_every_steps=0, num_prediction_pngs=0,
        optimizer="adam", learning_rate=0.01, prior_correction_floor=0.01)
    lines = []
    result = train.train(config, train_dir, log=lines.append)
    saved = json.loads((train_dir / "metrics.json").read_text())
    sweep = {row["prior_correction"]: row for row in saved["prior_correction_sweep"]}
    chosen = saved["prior_correction"]
    assert list(sweep) == list(prior_choice.GRID) and saved["prior_correction_floor"] == 0.01
    assert saved["prior_correction_choice"] == "largest" and saved["prior_correction_floor_kept"]
    assert not any(line.startswith("warning: no correction keeps") for line in lines)
    assert chosen > 0 and result["config"].prior_correction == chosen
    assert chosen == max(tau for tau, row in sweep.items() if row["pixel_accuracy"] >= 0.01)
    assert any("<- chosen" in line and f"{chosen:6.1f}" in line for line in lines)
    # the final validation predicted with the chosen correction, not the graph's default 0
    assert sweep[chosen]["pixel_accuracy"] != sweep[0.0]["pixel_accuracy"]
    for key in prior_choice.SWEEP_KEYS:
        assert saved[key] == pytest.approx(sweep[chosen][key], abs=1e-12)
    # config.json holds it, so eval scores the same images the same way
    assert json.loads((train_dir / "config.json").read_text())["prior_correction"] == chosen
    again = evaluate.run_eval(train_dir, log=lambda *a: None)
    assert again["pixel_accuracy"] == pytest.approx(saved["pixel_accuracy"], abs=1e-12)

    # eval --prior-correction-sweep scores the same grid on the same images from the checkpoint
    table = tmp_path / "sweep.json"
    assert cli.main(["eval", "--train-dir", str(train_dir), "--prior-correction-sweep",
                     "--json", str(table)]) == 0
    rows = json.loads(table.read_text())["prior_correction_sweep"]
    assert [row["prior_correction"] for row in rows] == list(prior_choice.GRID)
    for row in rows:
        for key in prior_choice.SWEEP_KEYS:
            assert row[key] == pytest.approx(sweep[row["prior_correction"]][key], abs=1e-3)
    assert "   tau   pixel acc   mean acc   mean IU" in capsys.readouterr().out
    assert cli.main(["eval", "--train-dir", str(train_dir), "--prior-correction-sweep",
                     "--prior-correction", "1"]) == 2
    assert "leave out --prior-correction" in capsys.readouterr().err
