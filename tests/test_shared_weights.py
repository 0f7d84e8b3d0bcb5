"""One module applied several times (a detection head run on every FPN level, as in torchvision's
RetinaNet): its weights are one initializer read by several Conv nodes, so the channels those calls
map to it are pruned together, and no single call of it is a removable block."""
import json

import pytest

from tests.test_cli import invoke

MODELS = '''
import torch
from torch import nn

INPUT_SHAPE = (1, 3, 32, 32)


class SharedHead(nn.Module):
    """Two pyramid levels, each with its own lateral conv, then one head applied to both levels."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.lat = nn.ModuleList([nn.Conv2d(16, 32, 1), nn.Conv2d(16, 32, 1)])
        self.head = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())
        self.cls = nn.Conv2d(32, 4, 1)

    def forward(self, x):
        a = self.stem(x)
        b = self.down(a)
        outs = [self.cls(self.head(lat(f))) for lat, f in zip(self.lat, (a, b))]
        return torch.cat([o.flatten(2) for o in outs], 2)


def shared_head():
    return SharedHead()
'''


@pytest.fixture(scope="module")
def shared_onnx(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shared")
    (folder / "models.py").write_text(MODELS)
    path = folder / "shared.onnx"
    result = invoke("export", f"{folder / 'models.py'}:shared_head", "-o", path)
    assert result.exit_code == 0, result.output
    return path


def test_shared_head_couples_the_levels_it_reads(shared_onnx):
    data = json.loads(invoke("analyze", shared_onnx, "--json").stdout)
    by_member = {m: g for g in data["groups"] for m in g["members"]}
    # The head's input channels are channel j of both levels: the two lateral convs form one group.
    assert by_member["lat.0"]["id"] == by_member["lat.1"]["id"] and by_member["lat.0"]["prunable"]
    assert by_member["head.0"]["prunable"] and by_member["head.2"]["prunable"]
    # head.0 followed by head.2 would be a removable layer if it were called once; it is called twice.
    assert not [b["id"] for b in data["blocks"] if b["id"].startswith("head")]


def test_shared_head_prunes_and_verifies(shared_onnx, tmp_path):
    out = tmp_path / "out"
    result = invoke("prune", shared_onnx, "--ratio", "0.5", "-o", out, "--json")
    assert result.exit_code == 0, result.output  # was: the plan slices head.0.weight two different ways
    widths = {g["id"]: g for g in json.loads(result.stdout)["groups"]}
    assert any(g["after"] < g["before"] for gid, g in widths.items() if gid.startswith(("lat", "head")))
    result = invoke("verify", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] is True


def test_not_removable_modules_name_the_reason(resnet20_onnx):
    data = json.loads(invoke("analyze", resnet20_onnx, "--json").stdout)
    why = {n["id"]: n["reason"] for n in data["not_removable"]}
    # layer2.0 downsamples with a projection shortcut: its output shape differs from its input's.
    assert "changes the tensor shape 16x32x32 -> 32x16x16" in why["layer2.0"]
    assert "layer1" not in why  # a container made only of removable blocks: its blocks are listed instead
    assert not set(why) & {b["id"] for b in data["blocks"]}


@pytest.mark.slow  # ~60 s: torchvision's retinanet_resnet50_fpn at 320x320 (backbone + FPN + shared head)
def test_retinanet_prunes_backbone_fpn_and_head(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "sweep_deploy.py"
    spec = importlib.util.spec_from_file_location("sweep_deploy", path)
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    row = sweep.run_model("retinanet_resnet50_fpn", tmp_path)
    assert row["status"] == "ok", row.get("traceback") or row.get("error")  # was: conflicting slices in the head
    assert row["params_m"][1] < 0.7 * row["params_m"][0] and row["blocks"] > 0
