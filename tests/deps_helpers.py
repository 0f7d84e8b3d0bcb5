"""Helpers for the channel-pattern tests: export, randomised norms, prune-and-check parity."""

import copy
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from graphs.blocks import removable_blocks
from graphs.deps import analyze
from graphs.plan import Plan
from graphs.surgery import apply_plan
from graphs.parity import parity, run_onnx
from toolchain.export import export_onnx
from toolchain.sync import apply_edits

H = W = 16



# ----------------------------------------------------------------------------- helpers

def randomize_norms(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so activations stay well-scaled and BN matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                    m.bias.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
            elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)) and getattr(m, "weight", None) is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 0.4 - 0.2)
    return module


def export(module: nn.Module, input_shape=(1, 3, H, W)) -> onnx.ModelProto:
    module.eval()
    with tempfile.TemporaryDirectory() as tmp:
        return export_onnx(module, input_shape, Path(tmp) / "model.onnx")


def inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}


def torch_params(module: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def check_parity(onnx_model: onnx.ModelProto, module: nn.Module, input_shape, seed: int = 1):
    x = np.random.default_rng(seed).standard_normal((2, *input_shape[1:])).astype(np.float32)
    got = run_onnx(onnx_model, {"input": x})
    with torch.no_grad():
        out = module.eval()(torch.from_numpy(x))
    outs = [o.numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]
    p = parity(outs, got)
    assert p.ok, f"parity failed: max diff {p.max_diff:g} > {p.tolerance:g} (scale {p.scale:g})"
    assert not p.degenerate, f"degenerate output scale {p.scale:g}"
    return p


def prune_and_check(module: nn.Module, input_shape, plan_fn, expect_shapes: dict | None = None, seed: int = 0,
                    adjust=None, model: onnx.ModelProto | None = None):
    """Export, analyze, plan with plan_fn(analysis, blocks), apply to ONNX and to a torch copy, check parity.

    `model`: the module's export, when the caller already has it (randomize_norms(module, seed) was applied).
    `adjust(pruned_module, edits)` may change python-level constants of the pruned module before the check.
    `expect_shapes` maps initializer (= torch parameter) names to their shape in the pruned graph.
    Returns (analysis, pruned, edits, pruned_module).
    """
    torch.manual_seed(seed)
    module.eval()
    if model is None:
        randomize_norms(module, seed)
        model = export(module, input_shape)
        check_parity(model, module, input_shape)  # the unpruned export is faithful
    analysis = analyze(model)
    blocks = removable_blocks(analysis.model, analysis.shapes)
    plan = plan_fn(analysis, blocks)
    if isinstance(plan, dict):
        plan = Plan(channels=plan)
    pruned, edits = apply_plan(model, plan, analysis=analysis)
    pruned_module = apply_edits(copy.deepcopy(module), edits)
    if adjust is not None:
        adjust(pruned_module, edits)
    check_parity(pruned, pruned_module, input_shape)
    values = inits(pruned)
    for name, shape in (expect_shapes or {}).items():
        assert name in values, f"{name} missing from the pruned graph"
        assert values[name].shape == tuple(shape), f"{name}: {values[name].shape} != {tuple(shape)}"
    return analysis, pruned, edits, pruned_module


def group_of(analysis, module_name: str):
    """The group whose members include `module_name` as a producer (its output channels)."""
    found = [g for g in analysis.groups if module_name in g.widths]
    assert len(found) == 1, f"{module_name}: {[g.id for g in found]}"
    return found[0]


def cbr(cin, cout, k=3, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


# ----------------------------------------------------------------------------- models shared by the tests

class Chain(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.conv3(x)


class Block(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetTiny(nn.Module):
    def __init__(self, project=False):
        super().__init__()
        self.stem = cbr(3, 8)
        self.block1 = Block(8, 8)
        self.block2 = Block(8, 12, stride=2) if project else Block(8, 8)
        self.head = nn.Conv2d(12 if project else 8, 4, 1)

    def forward(self, x):
        return self.head(self.block2(self.block1(self.stem(x))))
