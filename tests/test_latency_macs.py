"""The per-layer model's savings (predict.LayerMap) against the MACs a pruned graph really has.

The latency model prices every narrowed layer by the fraction of its MACs a plan removes, except
grouped convs, priced by their width on purpose (predict._layer_saving says why). If a layer's
fraction were wrong by accident (a plain conv priced as a depthwise one, say), no fit of the
efficiencies could put it right. So: apply random plans to real graphs, count every node's MACs in
the pruned graph, and compare node by node with what LayerMap said before pruning.
"""
import numpy as np
import pytest
import torchvision

from graphs.deps import analyze
from graphs.plan import Plan
from graphs.stats import macs_per_node
from graphs.surgery import apply_plan
from toolchain.export import export_onnx
from toolchain.latency.predict import LayerMap
from toolchain.solve.budget import width_options

MODELS = {  # grouped (regnet, resnext), depthwise (mobilenet_v2), plain (resnet18)
    "regnet_y_400mf": torchvision.models.regnet_y_400mf,
    "resnext": lambda: torchvision.models.ResNet(torchvision.models.resnet.Bottleneck, [1, 1, 1, 1], groups=4,
                                                 width_per_group=16),
    "mobilenet_v2": torchvision.models.mobilenet_v2,
    "resnet18": torchvision.models.resnet18,
}


def random_plan(rng, analysis, blocks) -> tuple[dict[str, int], list]:
    kept = {}
    for g in analysis.groups:
        options = width_options(g, 8)[:-1] if g.prunable else []
        if len(options) and rng.random() < 0.7:
            kept[g.id] = int(rng.choice(options))
    removed = []
    for i in rng.permutation(len(blocks))[: rng.integers(0, 3)]:
        if not any(set(blocks[i].nodes) & set(r.nodes) for r in removed):
            removed.append(blocks[i])
    return kept, removed


def depthwise(model, node: str) -> bool:
    weight = next(n.input[1] for n in model.graph.node if n.name == node)
    return next(i for i in model.graph.initializer if i.name == weight).dims[1] == 1


@pytest.mark.parametrize("name", list(MODELS))
def test_predicted_mac_saving_is_what_the_pruned_graph_saves(name, tmp_path):
    model = export_onnx(MODELS[name]().eval(), (1, 3, 64, 64), tmp_path / f"{name}.onnx")
    analysis = analyze(model)
    layers = LayerMap.build(analysis)
    macs = macs_per_node(model)
    total = sum(macs.values())
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(4):
        # A removed layer whose widths differ gives the next conv a new input width (graphs/blocks.py):
        # that block's own table entry carries it, not the MAC shares, so such blocks are left out here.
        kept, removed = random_plan(rng, analysis, [b for b in analysis.blocks if b.next_conv is None])
        plan = Plan(channels={g: {"count": k} for g, k in kept.items()}, remove=[b.id for b in removed])
        pruned, _ = apply_plan(model, plan, analysis=analysis, check=False)
        fractions = {g: k / next(x.channels for x in analysis.groups if x.id == g) for g, k in kept.items()}
        gone = {n for b in removed for n in b.nodes}
        predicted = layers.savings(fractions, gone)
        after = macs_per_node(pruned)
        for node, saved in zip(layers.share, predicted):
            gi, go = layers.in_group.get(node), layers.out_group.get(node)
            if node in layers.by_width and gi == go and node not in gone and not depthwise(model, node):
                expected = layers.share[node] * (1.0 - fractions.get(go, 1.0))  # a grouped conv: by width
            else:
                expected = (macs[node] - after.get(node, 0)) / total
            assert saved == pytest.approx(expected, abs=1e-6), (name, node)
        actual = 1.0 - sum(after.values()) / total
        checked += actual > 0.05
    assert checked >= 2  # the plans did prune something worth checking


def test_grouped_convs_are_priced_by_width_and_plain_ones_by_macs(tmp_path):
    model = export_onnx(MODELS["resnext"]().eval(), (1, 3, 64, 64), tmp_path / "resnext.onnx")
    analysis = analyze(model)
    layers = LayerMap.build(analysis)
    grouped = next(n for n in layers.by_width if layers.in_group.get(n) == layers.out_group.get(n) is not None)
    plain = next(n for n in layers.share if n not in layers.by_width and layers.in_group.get(n) and layers.out_group.get(n))
    for node, expected in ((grouped, 0.5), (plain, 0.75)):
        fractions = {layers.in_group[node]: 0.5, layers.out_group[node]: 0.5}
        saved = layers.savings(fractions)[list(layers.share).index(node)]
        assert saved == pytest.approx(expected * layers.share[node])
