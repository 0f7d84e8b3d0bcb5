"""TF-style "same" padding (timm's tf_* models): pads computed from the spatial size at run time.

Once one such pad is computed at run time, ONNX shape inference loses every spatial size after it,
and the pads of later stride-2 convs could not be evaluated: EfficientNet-Lite0's four stride-2
expansion groups (96, 144, 240, 672 channels, the widest activations) stayed frozen, and joint
pruning's narrowest plan measured 0.51 of the unpruned latency where Torch-Pruning reached 0.35.
graphs/shapes.py now reads such shapes from one onnxruntime run and folds the pads' Clip.
"""
import timm

from deps_helpers import H, W, group_of, prune_and_check

EXPANSIONS = ("blocks.1.0.conv_pw", "blocks.2.0.conv_pw", "blocks.3.0.conv_pw", "blocks.5.0.conv_pw")


def test_lite0_stride2_expansions_prune_with_parity():
    module = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10)

    def plan(analysis, blocks):
        frozen = [g.id for g in analysis.groups if not g.prunable]
        assert frozen == ["input", "classifier"], frozen
        groups = [group_of(analysis, name) for name in EXPANSIONS]
        return {g.id: {"keep": list(range(0, g.channels, 2))} for g in groups}

    _, pruned, _, _ = prune_and_check(module, (1, 3, H, W), plan)
    kept = {n.name: n for n in pruned.graph.initializer}
    assert kept["blocks.1.0.conv_pw.weight"].dims[0] == 48
    assert kept["blocks.5.0.conv_pw.weight"].dims[0] == 336
