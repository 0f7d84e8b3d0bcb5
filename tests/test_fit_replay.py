"""bench/fit_replay.py: the measured plans it replays, and the other commit's latency model it loads."""
import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    sys.path.insert(0, str(ROOT / "bench"))  # the script imports benchlog as its neighbour
    spec = importlib.util.spec_from_file_location("fit_replay", ROOT / "bench" / "fit_replay.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plans_are_the_measured_three_epoch_ones_once_each(tmp_path):
    row = {"model": "builtin:resnet20", "seed": 2, "setting": "te3-ft10-n10000-t0-sNone", "measured_ratio": 0.51,
           "narrowed": {"layer1.0.conv1": [8, 16]}, "removed": ["layer2.1"]}
    lines = [json.dumps(row), json.dumps(row),  # the same plan in two result files' merge: counted once
             json.dumps({**row, "setting": "te1-ft10-n10000-t0-sNone"}),  # another baseline's table
             json.dumps({**row, "method": "unpruned-ft", "narrowed": None}),  # no plan
             "| a markdown line |"]
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(lines) + "\n")
    plans = _bench().measured_plans([str(path)])
    assert list(plans) == [("builtin:resnet20", 2)] and len(plans[("builtin:resnet20", 2)]) == 1


def test_the_other_commits_model_is_loaded_beside_this_one():
    bench = _bench()
    before = bench.module_at("HEAD")
    assert before.Predictor is not bench.current.Predictor and hasattr(before.Predictor, "predict")
