"""ultralytics:NAME specs (optional extra) and the torchvision segmentation/detection builders."""
import json
import sys

import pytest
import torch

from graphs.errors import InputError
from tests.test_cli import assert_bad_input, invoke
from toolchain.zoo import build_model

ultralytics = pytest.importorskip("ultralytics", reason="the optional extra .[yolo] is not installed")


@pytest.fixture(scope="module")
def yolov8n_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("yolo") / "yolov8n.onnx"
    result = invoke("export", "ultralytics:yolov8n.yaml", "--input-shape", "1,3,160,160", "-o", path)
    assert result.exit_code == 0, result.output
    return path


@pytest.mark.slow  # ~40 s on the shared 2-core machine (export 20 s, prune + verify 18 s)
def test_yolov8n_prunes_and_verifies_with_nested_outputs(yolov8n_onnx, tmp_path):
    out = tmp_path / "pruned"
    result = invoke("prune", yolov8n_onnx, "--ratio", "0.3", "--round-to", "8", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["params"]["after"] < 0.7 * summary["params"]["before"]
    # (y, {'boxes', 'scores', 'feats': [p3, p4, p5]}): 6 tensors, compared one by one.
    result = invoke("verify", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] is True


@pytest.mark.slow  # ~40 s
def test_yolo11n_syncs_c3k2_and_c2psa(tmp_path):
    onnx_path, out = tmp_path / "yolo11n.onnx", tmp_path / "pruned"
    assert invoke("export", "ultralytics:yolo11n.yaml", "--input-shape", "1,3,160,160", "-o", onnx_path).exit_code == 0
    result = invoke("prune", onnx_path, "--ratio", "0.3", "--round-to", "8", "-o", out)
    assert result.exit_code == 0, result.output  # was: split_with_sizes expects ... 176 ... got [128, 128]
    assert invoke("verify", out).exit_code == 0


def test_yolo_spec_without_ultralytics_is_bad_input(monkeypatch, tmp_path):
    for name in [m for m in sys.modules if m == "ultralytics" or m.startswith("ultralytics.")]:
        monkeypatch.setitem(sys.modules, name, None)  # `import ultralytics...` now raises ImportError
    monkeypatch.setitem(sys.modules, "ultralytics", None)
    out = tmp_path / "m.onnx"
    assert_bad_input(invoke("export", "ultralytics:yolov8n.yaml", "-o", out), "pip install -e .[yolo]")
    assert not out.exists()


def test_yolo_weights_are_never_downloaded(tmp_path):
    out = tmp_path / "m.onnx"
    assert_bad_input(invoke("export", "ultralytics:yolov8n.pt", "-o", out), "never downloads")
    assert not out.exists()
    with pytest.raises(InputError, match="no model YAML"):
        build_model("ultralytics:yolov99z.yaml")


@pytest.mark.parametrize("spec", ["torchvision:lraspp_mobilenet_v3_large", "torchvision:ssdlite320_mobilenet_v3_large"])
def test_torchvision_seg_and_det_build_without_downloading(spec, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"tried to download {args[0] if args else kwargs}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    assert sum(p.numel() for p in build_model(spec).parameters()) > 1_000_000
