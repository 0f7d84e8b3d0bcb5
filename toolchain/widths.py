"""Width attributes of torch modules, made to agree with the (sliced) tensors they hold.

Modules remember their widths in Python attributes as well as in tensor shapes: Conv2d.out_channels,
BatchNorm.num_features, and in model zoos things like ultralytics' `C2f.c` (the split size of its
first conv's output) or `Attention.num_heads`. After sync slices the tensors, each module type's rule
(a registry keyed by type, as Torch-Pruning's per-layer functions) sets those attributes again.

Rules are keyed by the class's qualified name, so entries for optional packages (ultralytics) cost no
import; a module's rule is found along its MRO (C3k2 uses C2f's). A rule that cannot express the
pruned widths raises `WidthError` naming the module type and the attribute.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from graphs.errors import InputError
from graphs.registry import registrar

__all__ = ["WidthError", "fix_all_widths", "fix_widths", "width_rule", "width_attributes"]

_RULES: dict[str, Callable[[nn.Module], None]] = {}


class WidthError(InputError):
    """A module's width attributes cannot describe its pruned tensors (bad input for sync: exit 2)."""


# @width_rule("module.QualName", ...): the classes are named by strings, so no import is needed.
width_rule = registrar(_RULES)


def _key(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def fix_widths(module: nn.Module) -> None:
    """Apply the most specific rule for `module`'s type (along its MRO); no rule, nothing to do."""
    for cls in type(module).__mro__:
        rule = _RULES.get(_key(cls))
        if rule is not None:
            rule(module)
            return


def fix_all_widths(module: nn.Module) -> None:
    """Every submodule, children before parents: a C2f reads its cv1's width once the conv has it."""
    for sub in reversed(list(module.modules())):
        fix_widths(sub)


def width_attributes(module: nn.Module) -> list[str]:
    """Integer attributes a module keeps beside its tensors: the likely width attributes, named in a
    refusal when a forward pass fails after sync."""
    return sorted(k for k, v in vars(module).items() if not k.startswith("_") and type(v) is int)


# --- torch.nn -----------------------------------------------------------------------------------------

@width_rule("torch.nn.modules.conv._ConvNd")
def _conv(m: nn.Module) -> None:
    weight = m.weight
    if m.transposed:
        m.in_channels, m.out_channels = weight.shape[0], weight.shape[1] * m.groups
    else:
        m.out_channels, m.in_channels = weight.shape[0], weight.shape[1] * m.groups


@width_rule("torch.nn.modules.batchnorm._NormBase")
def _norm(m: nn.Module) -> None:
    m.num_features = (m.weight if m.weight is not None else m.running_mean).shape[0]


@width_rule("torch.nn.modules.linear.Linear")
def _linear(m: nn.Module) -> None:
    m.out_features, m.in_features = m.weight.shape


@width_rule("torch.nn.modules.normalization.LayerNorm")
def _layer_norm(m: nn.Module) -> None:
    if m.weight is not None:
        m.normalized_shape = tuple(m.weight.shape)


@width_rule("torch.nn.modules.normalization.GroupNorm")
def _group_norm(m: nn.Module) -> None:
    m.num_channels = m.weight.shape[0]


@width_rule("torch.nn.modules.activation.PReLU")
def _prelu(m: nn.Module) -> None:
    m.num_parameters = m.weight.numel()


# --- ultralytics (optional extra) -----------------------------------------------------------------------
# C3, SPPF, Bottleneck, Detect and Segment keep no pruned width in attributes: their hidden widths are
# local variables at construction time, and the head's nc/reg_max/nm are graph outputs (never pruned).

def _half_of(m: nn.Module, conv: nn.Module, attr: str) -> int:
    width = conv.out_channels
    if width % 2:
        raise WidthError(f"cannot sync {type(m).__name__}.{attr}: its first conv now has {width} output "
                         "channels, which it splits into two equal halves")
    return width // 2


@width_rule("ultralytics.nn.modules.block.C2f", "ultralytics.nn.modules.block.C2PSA",
            "ultralytics.nn.modules.block.C2fPSA")
def _split_in_halves(m: nn.Module) -> None:
    # forward splits cv1's output with (self.c, self.c) (chunk(2) in C2f.forward, the same when equal).
    m.c = _half_of(m, m.cv1.conv, "c")


@width_rule("ultralytics.nn.modules.block.Attention")
def _attention(m: nn.Module) -> None:
    # qkv is laid out head by head ([q | k | v] per head); the graph side never prunes inside it
    # (its Split cuts a reshaped axis), so num_heads/key_dim/head_dim must still describe it.
    per_head = 2 * m.key_dim + m.head_dim
    if m.qkv.conv.out_channels != m.num_heads * per_head or m.proj.conv.in_channels != m.num_heads * m.head_dim:
        raise WidthError(f"cannot sync {type(m).__name__}.num_heads/key_dim: qkv has {m.qkv.conv.out_channels} "
                         f"channels, not {m.num_heads} heads x {per_head}")
