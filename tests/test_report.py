"""`compress report`: figures, tables and headline from synthetic pruned directories."""
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from graphs.errors import InputError
from toolchain.report import write_report

BLOCKS = [f"layer{s}.{i}" for s in (1, 2, 3) for i in range(3)]
GROUPS = ["conv1"] + [f"{b}.conv1" for b in BLOCKS] + ["layer2.0.conv2", "layer3.0.conv2"]
WIDTH = {g: 16 if g.startswith(("conv1", "layer1")) else 32 if g.startswith("layer2") else 64 for g in GROUPS}
REMOVED = ["layer2.2", "layer3.1"]


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _summary(measured=0.48, budget=0.5):
    groups = [{"id": "input", "before": 3, "after": 3, "prunable": False}]
    groups += [{"id": g, "before": WIDTH[g], "after": WIDTH[g] // 2 if i % 3 else WIDTH[g] - 8, "prunable": True}
               for i, g in enumerate(GROUPS)]
    groups.append({"id": "fc", "before": 10, "after": 10, "prunable": False})
    history = [
        {"stage": 1, "attempt": 0, "target": 0.5, "predicted": 0.51, "predicted_additive": 0.46, "ratio": 0.55,
         "reference_ms": 4.0, "pruned_ms": 2.2},
        {"stage": 1, "attempt": 1, "target": 0.45, "predicted": 0.47, "predicted_additive": 0.42,
         "ratio": measured, "reference_ms": 4.0, "pruned_ms": 4.0 * measured},
    ]
    return {"spec": "builtin:resnet20", "params": {"before": 272474, "after": 101234},
            "macs": {"before": 40554368, "after": 17012345}, "groups": groups,
            "removed": [{"id": r, "kind": "residual", "members": [f"{r}.conv1", f"{r}.conv2"]} for r in REMOVED],
            "notes": ["fc input width unchanged"],
            "latency": {"budget": budget, "measured": measured, "predicted": 0.47, "predicted_additive": 0.42,
                        "reference_ms": 4.0, "pruned_ms": 4.0 * measured, "met": measured <= budget * 1.02,
                        "backend": "ort", "provider": None, "precision": "fp32", "batch": 4, "history": history}}


def _plan():
    return {"version": 1, "model": {"spec": "builtin:resnet20", "input_shape": [1, 3, 32, 32], "onnx_sha256": "ab" * 32},
            "channels": {"conv1": {"keep": list(range(8))}}, "remove": REMOVED, "round_to": 8,
            "provenance": {"criterion": "sp-lamp", "solver": "joint-knapsack", "mode": "joint", "budget": 0.5,
                           "predicted_latency_ratio": 0.47}}


def _train(after=97.31, before=81.5, teacher=98.02):
    hist = [{"epoch": e, "train_loss": 1.0 / e, "lr": 1e-3, "val_top1": before + (after - before) * e / 5,
             "val_top5": 99.0, "val_loss": 0.5 / e} for e in range(1, 6)]
    return {"config": {"epochs": 5, "lr": 1e-3}, "history": hist, "before": {"top1": before, "top5": 95.0, "loss": 0.9},
            "after": {"top1": after, "top5": 99.6, "loss": 0.1},
            "teacher": {"top1": teacher, "top5": 99.9, "loss": 0.05} if teacher else None, "data": "mnist5k"}


def _scores():
    crit = {"mean:l2": {b: 1.0 + i for i, b in enumerate(BLOCKS)},
            "imprinting": {b: 0.3 * ((i * 7) % 5) for i, b in enumerate(BLOCKS)},
            "taylor": {b: 100.0 - 3 * i for i, b in enumerate(BLOCKS)}}
    return {"criteria": crit, "blocks": BLOCKS}


def _table():
    groups = {g: {str(w): round(0.6 + 0.4 * w / WIDTH[g] * (1 + 0.1 * (k % 4)) / 1.3, 4)
                  for w in range(8, WIDTH[g] + 1, 8)} for k, g in enumerate(GROUPS)}
    return {"base_ms": 4.0, "backend": "ort", "device": "cpu", "groups": groups, "widths": WIDTH,
            "blocks": {b: round(0.97 - 0.005 * i, 4) for i, b in enumerate(BLOCKS)}}


@pytest.fixture
def full_dir(tmp_path):
    d = tmp_path / "out"
    _write(d / "summary.json", _summary())
    _write(d / "plan.json", _plan())
    _write(d / "train.json", _train())
    _write(d / "scores.json", _scores())
    _write(d / "table.json", _table())
    runs = tmp_path / "runs"
    baseline = _summary()
    baseline.pop("latency")
    baseline["removed"] = []
    for g in baseline["groups"]:
        g["after"] = g["before"]
    _write(runs / "baseline" / "summary.json", baseline)
    _write(runs / "baseline" / "train.json", _train(after=98.0, teacher=None))
    _write(runs / "joint50" / "summary.json", _summary(0.48))
    _write(runs / "joint50" / "train.json", _train(after=97.3))
    _write(runs / "filter50" / "summary.json", _summary(0.52))
    _write(runs / "filter50" / "train.json", _train(after=96.1))
    return d, runs


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tables = [], 0

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag == "table":
            self.tables += 1


def _check_png(path: Path):
    assert path.is_file(), path
    assert path.stat().st_size > 5000, path
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] >= 400 and im.size[1] >= 300


EXPECTED = ["channels", "importance", "latency_table", "latency_blocks", "latency_pred_vs_measured", "pareto", "training"]


def test_full_report(full_dir):
    d, runs = full_dir
    written = write_report(d, results=str(runs))
    out = d / "report"
    assert written["skipped"] == []
    assert sorted(written["figures"]) == sorted(EXPECTED)
    for name in EXPECTED:
        _check_png(out / f"{name}.png")
    md = (out / "report.md").read_text()
    # headline
    assert "builtin:resnet20" in md
    assert "272.47k -> 101.23k (ratio 0.372)" in md
    assert "40.55M -> 17.01M (ratio 0.419)" in md
    assert "layer2.2, layer3.1" in md
    assert "budget 0.500 (2.000 ms), predicted 0.470 (1.880 ms), measured 0.480" in md and "**met**" in md
    assert "**Latency** on `ort, fp32, batch 4`: budget" in md  # what the budget is about
    assert "unpruned 98.02, after pruning 81.50, after fine-tuning 97.31" in md
    assert "sp-lamp" in md and "joint-knapsack" in md and "**mode** joint" in md
    # every figure is followed by its table
    for name in EXPECTED:
        tail = md.split(f"]({name}.png)", 1)[1].lstrip()
        assert tail.startswith("|"), name
    assert "| layer2.0.conv2 | 32 |" in md                       # channels table
    assert "| mean:l2 | imprinting | taylor |" in md             # importance table
    assert "| layer1.0 | 0.9700 | 0.0300 |" in md                # block removal table
    assert "| 1 | 1 | 0.450 | 0.470 | 0.420 | 0.480 | +0.010 |" in md  # predicted vs measured
    assert re.search(r"\| baseline \| 1\.000 \| 98\.00 \|.*\| yes \|", md)  # Pareto: baseline on the front
    assert re.search(r"\| filter50 \| 0\.520 \| 96\.10 \|.*\|  \|", md)  # dominated by joint50
    assert re.search(r"\| joint50 \| 0\.480 \| 97\.30 \|.*\| yes \|", md)
    assert "| 5 | 0.2000 |" in md                                # training table
    # html
    page = (out / "report.html").read_text()
    parser = _Links()
    parser.feed(page)
    assert sorted(Path(s).stem for s in parser.images) == sorted(EXPECTED)
    assert all((out / s).is_file() for s in parser.images)
    assert parser.tables >= len(EXPECTED)
    assert "<strong>Params</strong>" in page
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


@pytest.mark.parametrize("record, says", [
    ({"recalibrated": True, "images": 512, "norms": 21}, "after pruning 81.50 (BatchNorm statistics re-estimated on 512 images)"),
    ({"recalibrated": False, "why": "no data given"}, "after pruning 81.50 (the unpruned model's BatchNorm statistics)"),
])
def test_the_top1_after_pruning_says_which_batchnorm_statistics_it_ran_with(tmp_path, record, says):
    d = tmp_path / "out"
    _write(d / "summary.json", {**_summary(), "batchnorm": record})
    _write(d / "plan.json", _plan())
    _write(d / "train.json", _train())
    write_report(d, out=str(tmp_path / "rep"))
    assert says in (tmp_path / "rep" / "report.md").read_text()


def test_optional_files_missing(tmp_path):
    d = tmp_path / "bare"
    s = _summary()
    s.pop("latency")
    _write(d / "summary.json", s)
    _write(d / "plan.json", _plan())
    written = write_report(d, out=str(tmp_path / "rep"))
    assert sorted(written["skipped"]) == sorted(["importance", "latency_table", "latency", "pareto", "training"])
    assert list(written["figures"]) == ["channels"]
    _check_png(tmp_path / "rep" / "channels.png")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Skipped: no `scores.json`" in md
    assert "Skipped: no `table.json`" in md
    assert "Skipped: summary.json has no measured `latency`" in md
    assert "Skipped: no results folder given" in md
    assert "Skipped: no `train.json`" in md
    assert "not fine-tuned yet" in md
    assert "Not drawn for lack of data: importance, latency_table, latency, pareto, training." in md
    assert not (d / "report").exists()


def test_long_tables_truncated(tmp_path):
    d = tmp_path / "big"
    s = _summary()
    s["groups"] = [{"id": f"g{i}", "before": 64, "after": 64 - (i % 7) * 8, "prunable": True} for i in range(80)]
    _write(d / "summary.json", s)
    _write(d / "plan.json", _plan())
    write_report(d)
    md = (d / "report" / "report.md").read_text()
    assert "The 30 most pruned of 80 groups" in md
    channel_rows = [ln for ln in md.splitlines() if re.match(r"\| g\d+ \| 64 \|", ln)]
    assert len(channel_rows) == 30
    assert all(int(ln.split("|")[3]) <= 32 for ln in channel_rows)  # the most pruned ones


def test_bad_input(tmp_path):
    with pytest.raises(InputError, match="summary.json"):
        write_report(tmp_path)
    with pytest.raises(InputError, match="no such directory"):
        write_report(tmp_path / "nope")
    _write(tmp_path / "summary.json", _summary())
    with pytest.raises(InputError, match="plan.json"):
        write_report(tmp_path)
    (tmp_path / "plan.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        write_report(tmp_path)
    _write(tmp_path / "plan.json", _plan())
    with pytest.raises(InputError, match="not a directory"):
        write_report(tmp_path, results=str(tmp_path / "missing-runs"))
    for exc in (InputError,):
        try:
            write_report(tmp_path / "nope")
        except exc as e:
            assert "\n" not in str(e)
