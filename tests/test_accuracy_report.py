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


def test_joint_at_tp_prunes_to_the_latency_torch_pruning_measured(monkeypatch, tmp_path):
    """joint-at-tp's target is the seed's Torch-Pruning row at the same budget (its measured ratio, not
    the budget); a seed without one is skipped, nothing recorded, and its row stays under the budget's
    column, paired against Torch-Pruning's."""
    bench = _bench()
    setting = "te3-ft2-n0-t0-sNone"
    tp = {**_rec("torch-pruning", 0, 82.0, 80.0), "model": "builtin:resnet20", "budget": 0.5,
          "measured_ratio": 0.537, "met": False, "setting": setting, "seconds": 1.0}
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text(bench.json.dumps(tp) + "\n")
    calls = []

    def fake_run_one(args, model, method, budget, seed, work, target):
        calls.append((method, budget, seed, target))
        return {"model": model, "method": method, "budget": budget, "seed": seed, "setting": args.setting,
                "measured_ratio": target - 0.01, "top1_pruned": 70.0, "top1": 83.5, "baseline_top1": 80.0,
                "seconds": 1.0, "met": True, "target_ratio": target}

    monkeypatch.setattr(bench, "run_one", fake_run_one)
    monkeypatch.setattr("sys.argv", ["accuracy_at_latency.py", "--models", "builtin:resnet20", "--seeds", "0,1",
                                     "--budgets", "0.5", "--methods", "joint-at-tp,torch-pruning", "--epochs", "2",
                                     "--train-epochs", "3", "--work", str(tmp_path / "w"), "--jsonl", str(jsonl),
                                     "--log", str(tmp_path / "log.md")])
    bench.main()
    # seed 1 has no Torch-Pruning row when joint-at-tp's turn comes: skipped; its own row runs after
    assert calls == [("joint-at-tp", 0.5, 0, 0.537), ("torch-pruning", 0.5, 1, 0.5)]
    rows = [bench.json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["method"] for r in rows] == ["torch-pruning", "joint-at-tp", "torch-pruning"]
    assert rows[1]["target_ratio"] == 0.537
    text = (tmp_path / "log.md").read_text()
    assert "| joint-at-tp minus | budget 0.5 |" in text
    assert "| torch-pruning | 1.50 (n=1), ahead in 1 |" in text  # 83.5 - 82.0
