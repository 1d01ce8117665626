import json

import pytest

from nrc.cli import main


@pytest.mark.parametrize("argv,message", [
    (["--weight-decays", "-0.1"], "weight_decay must be >= 0"),
    (["--widths", "64,0"], "widths must all be >= 1"),
    (["--epochs", "-1"], "epochs must be >= 0"),
    (["--per-class", "0"], "per_class must be >= 1"),
    (["--momentum", "1.5"], "momentum must be in"),
    (["--tol", "2"], "tol must be in"),
    (["--device", "tpu"], "device must be"),
    (["--residual", "--widths", "8,16"], "residual network"),
])
def test_bad_values_stop_before_any_work(argv, message, capsys, monkeypatch):
    import nrc.results

    monkeypatch.setattr(nrc.results, "train", lambda *a, **k: pytest.fail("training started"))
    assert main(["sweep", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--dataset", "imagenet"], ["--activation", "swish"], ["--loss", "hinge"]])
def test_unknown_choices_are_rejected_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sweep", *argv])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_config_file_unknown_key(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("weight_decays: [0.01]\ndropout: 0.5\n")
    assert main(["sweep", "--config", str(cfg)]) == 2
    assert "unknown option(s) ['dropout']" in capsys.readouterr().err


def test_missing_data_files_error_names_them(tmp_path, capsys):
    assert main(["sweep", "--dataset", "cifar10", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "data_batch_1" in err and str(tmp_path) in err


def test_small_sweep_prints_falling_ranks_and_writes_outputs(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["sweep", "--quiet", "--epochs", "60", "--widths", "32,32", "--weight-decays", "1e-3,1e-1",
                 "--seeds", "0", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "Numerical rank" in text and "W2" in text
    import pandas as pd

    tidy = pd.read_csv(out / "tidy.csv")
    assert {"member", "site", "layer", "metric", "value", "weight_decay"} <= set(tidy.columns)
    r = tidy[(tidy.metric == "rank_1e-2") & (tidy.site == "W2")].set_index("weight_decay")["value"]
    assert r[0.1] < r[0.001]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["epochs"] == 60 and "commit" in meta and "device" in meta
