"""bench/accuracy_at_latency.py's summary: each method's mean +- std per budget, and the first joint
method run (joint, or joint-taylor alone) paired seed by seed against the unpruned model and every row."""
import argparse
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("accuracy_at_latency", ROOT / "bench" / "accuracy_at_latency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rec(method, seed, top1, base):
    return {"model": "builtin:resnet56", "method": method, "budget": 0.7, "seed": seed, "setting": "s",
            "measured_ratio": 0.69, "top1": top1, "baseline_top1": base, "met": True}


def _args(methods):
    return argparse.Namespace(models=["builtin:resnet56"], methods=methods, budgets=[0.7], seeds=[0, 1], setting="s")


def test_joint_taylor_alone_is_paired_against_every_row():
    bench = _bench()
    assert bench.METHODS["joint-taylor"] == ("joint", "taylor", None)
    records = [_rec("joint-taylor", 0, 79.0, 80.0), _rec("joint-taylor", 1, 77.0, 78.0),
               _rec("layer", 0, 78.0, 80.0), _rec("layer", 1, 78.5, 78.0)]
    text = bench.summary(records, _args(["joint-taylor", "layer"]))
    assert "| joint-taylor | 78.00 ± 1.41 (n=2) / 0.690 ± 0.000 (n=2) |" in text
    assert "| joint-taylor minus | budget 0.7 |" in text
    assert "| unpruned | -1.00 ± 0.00 (n=2), ahead in 0 |" in text  # 79-80, 77-78
    assert "| layer | -0.25 ± 1.77 (n=2), ahead in 1 |" in text  # +1.0, -1.5


def test_joint_is_the_reference_when_both_run():
    bench = _bench()
    records = [_rec("joint", 0, 79.5, 80.0), _rec("joint", 1, 77.5, 78.0),
               _rec("joint-taylor", 0, 79.0, 80.0), _rec("joint-taylor", 1, 78.0, 78.0)]
    text = bench.summary(records, _args(["joint", "joint-taylor"]))
    assert "| joint minus | budget 0.7 |" in text
    assert "| joint-taylor | 0.00 ± 0.71 (n=2), ahead in 1 |" in text  # +0.5, -0.5


def test_unpruned_ft_is_trained_once_per_seed():
    bench = _bench()
    done = {**_rec("unpruned-ft", 1, 79.0, 78.0), "measured_ratio": 1.0}
    records = [_rec("joint", 1, 77.0, 78.0), done]
    assert bench.same_training_elsewhere(records, "builtin:resnet56", 1, "s") is done
    assert bench.same_training_elsewhere(records, "builtin:resnet56", 0, "s") is None  # another seed: trains
    assert bench.same_training_elsewhere(records, "builtin:resnet56", 1, "other") is None  # other settings: trains


def test_distilled_rows_keep_a_setting_of_their_own(monkeypatch):
    """Rows resume by setting: a distilled fine-tune must never be read back as a plain one (or its
    unpruned-ft row reused for the other), while both prune the same baselines."""
    bench = _bench()
    argv = ["accuracy_at_latency.py", "--models", "builtin:resnet20", "--epochs", "2", "--train-epochs", "3"]
    monkeypatch.setattr("sys.argv", argv)
    plain = bench.parse_args()
    monkeypatch.setattr("sys.argv", argv + ["--distill"])
    distilled = bench.parse_args()
    assert distilled.distill and not plain.distill
    assert distilled.setting != plain.setting
    assert distilled.base_setting == plain.base_setting
    records = [{**_rec("unpruned-ft", 0, 79.0, 78.0), "setting": plain.setting}]
    assert bench.same_training_elsewhere(records, "builtin:resnet56", 0, distilled.setting) is None


def test_fine_tuning_on_more_images_keeps_a_setting_of_its_own(monkeypatch):
    """--finetune-subset changes what every row trains on, not the baseline: its rows must not resume as
    (or pair with) rows fine-tuned on the baseline's images, while pruning the same baselines; left
    unset it is --train-subset's, and the setting tag is unchanged, so earlier rows still resume."""
    bench = _bench()
    argv = ["accuracy_at_latency.py", "--models", "builtin:resnet20", "--epochs", "2", "--train-epochs", "3",
            "--train-subset", "10000"]
    monkeypatch.setattr("sys.argv", argv)
    plain = bench.parse_args()
    monkeypatch.setattr("sys.argv", argv + ["--finetune-subset", "0"])
    more = bench.parse_args()
    assert (plain.finetune_subset, more.finetune_subset) == (10000, 0)
    assert plain.setting == "te3-ft2-n10000-t0-sNone"
    assert more.setting != plain.setting and more.base_setting == plain.base_setting
    records = [{**_rec("unpruned-ft", 0, 79.0, 78.0), "setting": plain.setting}]
    assert bench.same_training_elsewhere(records, "builtin:resnet56", 0, more.setting) is None
