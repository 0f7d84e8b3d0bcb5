"""MAC counts where ONNX shape inference loses the spatial size (graphs/spatial.py)."""
import onnx
import pytest
import torch
from torch import nn

from graphs.shapes import tensor_shapes
from graphs.stats import count_macs, macs_per_node
from toolchain.export import export_onnx


class ChunkBlock(nn.Module):
    """ultralytics' C2f pattern: a conv's output chunked on the channel axis, one half convolved again."""

    def __init__(self):
        super().__init__()
        self.cv1 = nn.Conv2d(3, 32, 3, stride=2, padding=1)
        self.m = nn.Conv2d(16, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.cv2 = nn.Conv2d(48, 8, 1)

    def forward(self, x):
        a, b = self.cv1(x).chunk(2, 1)
        return self.cv2(self.pool(torch.cat([a, b, self.m(b)], 1)))


def conv_named(model: onnx.ModelProto, part: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type == "Conv" and part in n.name)


def test_convs_after_a_runtime_chunk_count_their_full_spatial_size(tmp_path):
    model = export_onnx(ChunkBlock().eval(), (1, 3, 64, 64), tmp_path / "chunk.onnx")
    inner, last = conv_named(model, "m"), conv_named(model, "cv2")
    macs = macs_per_node(model)
    assert macs[inner.name] == 16 * 16 * 9 * 32 * 32  # 32x32 after the stride-2 stem
    assert macs[last.name] == 8 * 48 * 16 * 16  # after the stride-2 pool
    shape = tensor_shapes(model)[inner.output[0]]
    if shape and shape[2] and shape[3]:
        pytest.skip(f"this exporter's graph keeps the spatial size ({shape}): nothing to recover")


def test_yolov8n_macs_match_ultralytics_own_count(tmp_path):
    pytest.importorskip("ultralytics", reason="the optional extra .[yolo] is not installed")
    from ultralytics.utils.torch_utils import get_flops

    from toolchain.zoo import build_model

    model = build_model("ultralytics:yolov8n.yaml").eval()
    gflops = get_flops(model, imgsz=320)  # thop's count: 2 FLOPs per MAC
    macs = count_macs(export_onnx(model, (1, 3, 320, 320), tmp_path / "yolov8n.onnx"))
    assert macs / 1e9 == pytest.approx(gflops / 2, rel=0.03), (macs, gflops)
