"""Torch-Pruning 1.6 on an ultralytics YOLOv8 DetectionModel, the way its YOLOv8 example does it
(examples/yolov8/yolov8_pruning.py): every C2f is replaced by an equivalent C2f_v2 whose chunk(2) is two
1x1 convs (Torch-Pruning cannot trace the split), then MetaPruner with GroupMagnitudeImportance prunes
the model uniformly, ignoring the Detect head's final convs (its box and class outputs) and the DFL.

Used by bench/budget_yolo.py to compare with `compress prune --budget` at equal parameters.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def _c2f_v2_class():
    from ultralytics.nn.modules import Bottleneck, Conv

    class C2f_v2(nn.Module):  # noqa: N801  (the example's name)
        def __init__(self, c1, c2, n=1, shortcut=False, g=1, e=0.5):
            super().__init__()
            self.c = int(c2 * e)
            self.cv0 = Conv(c1, self.c, 1, 1)
            self.cv1 = Conv(c1, self.c, 1, 1)
            self.cv2 = Conv((2 + n) * self.c, c2, 1)
            self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, g, k=((3, 3), (3, 3)), e=1.0) for _ in range(n))

        def forward(self, x):
            y = [self.cv0(x), self.cv1(x)]
            y.extend(m(y[-1]) for m in self.m)
            return self.cv2(torch.cat(y, 1))

    return C2f_v2


def _to_v2(c2f: nn.Module, cls) -> nn.Module:
    """The C2f as a C2f_v2 computing the same function (cv1's two halves become cv0 and cv1)."""
    v2 = cls(c2f.cv1.conv.in_channels, c2f.cv2.conv.out_channels, n=len(c2f.m), shortcut=c2f.m[0].add,
             g=c2f.m[0].cv2.conv.groups, e=c2f.c / c2f.cv2.conv.out_channels)
    v2.cv2, v2.m = c2f.cv2, c2f.m
    old, state = c2f.state_dict(), v2.state_dict()
    half = old["cv1.conv.weight"].shape[0] // 2
    for key in ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):
        state[f"cv0.{key}"], state[f"cv1.{key}"] = old[f"cv1.{key}"][:half], old[f"cv1.{key}"][half:]
    v2.load_state_dict(state)
    for attr in ("f", "i", "type", "np"):  # ultralytics routes layers by these attributes
        if hasattr(c2f, attr):
            setattr(v2, attr, getattr(c2f, attr))
    return v2


def replace_c2f(module: nn.Module) -> nn.Module:
    from ultralytics.nn.modules import C2f

    cls = _c2f_v2_class()
    for name, child in module.named_children():
        if type(child) is C2f:
            setattr(module, name, _to_v2(child, cls))
        else:
            replace_c2f(child)
    return module


def tp_prune_yolo(model: nn.Module, size: int, ratio: float) -> nn.Module:
    """A pruned copy of the DetectionModel at Torch-Pruning's uniform `ratio` (round_to 8)."""
    import torch_pruning as tp
    from ultralytics.nn.modules import Detect

    m = replace_c2f(copy.deepcopy(model)).eval()
    for p in m.parameters():
        p.requires_grad_(True)
    detect = next(mod for mod in m.modules() if isinstance(mod, Detect))
    ignored = [seq[-1] for seq in [*detect.cv2, *detect.cv3]] + [detect.dfl]
    if ratio > 0:
        tp.pruner.MetaPruner(m, torch.randn(1, 3, size, size), importance=tp.importance.GroupMagnitudeImportance(p=2),
                             pruning_ratio=ratio, ignored_layers=ignored, round_to=8, global_pruning=False).step()
    return m


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def at_params(model: nn.Module, size: int, target: int, steps: int = 10) -> tuple[nn.Module, float]:
    """Bisect the uniform ratio until the pruned model has about `target` parameters (the closest tried)."""
    lo, hi, best = 0.0, 0.95, None
    for _ in range(steps):
        ratio = (lo + hi) / 2
        pruned = tp_prune_yolo(model, size, ratio)
        n = params(pruned)
        if best is None or abs(n - target) < abs(params(best[0]) - target):
            best = (pruned, ratio)
        if n > target:
            lo = ratio
        else:
            hi = ratio
    return best
