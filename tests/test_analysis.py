"""One Analysis per model: roots, blocks and the input shape computed once and passed on."""
from __future__ import annotations

import onnx
import pytest

import graphs.blocks
import graphs.deps
from graphs.deps import analyze
from graphs.errors import InputError
from graphs.onnx_io import load_model, model_input_shape, require_input_shape
from graphs.plan import Plan


def test_analysis_caches_roots_and_blocks(resnet20_onnx, monkeypatch):
    analysis = analyze(load_model(resnet20_onnx))
    calls = []
    real = graphs.blocks.removable_blocks
    monkeypatch.setattr(graphs.blocks, "removable_blocks", lambda *a: calls.append(1) or real(*a))
    assert analysis.roots is analysis.roots
    blocks = analysis.blocks
    assert [b.id for b in blocks] == [b.id for b in real(analysis.model, analysis.shapes)]
    assert analysis.blocks is blocks and len(calls) == 1
    assert analysis.roots.tolist() == [analysis.sets.find(i) for i in range(len(analysis.sets.parent))]


def test_prune_reuses_the_callers_analysis(resnet20_onnx, tmp_path, monkeypatch):
    """prune_to_dir with an analysis neither re-traces the graph nor re-finds its blocks."""
    from toolchain.prune import prune_to_dir

    analysis = analyze(load_model(resnet20_onnx))
    gid = next(g.id for g in analysis.groups if g.prunable)
    block = analysis.blocks[0].id
    traced, found = [], []
    real_run, real_blocks = graphs.deps.Tracer.run, graphs.blocks.removable_blocks
    monkeypatch.setattr(graphs.deps.Tracer, "run", lambda self: traced.append(1) or real_run(self))
    monkeypatch.setattr(graphs.blocks, "removable_blocks", lambda *a: found.append(1) or real_blocks(*a))
    summary = prune_to_dir(str(resnet20_onnx), str(tmp_path / "out"),
                           Plan(channels={gid: {"count": 8}}, remove=[block]), analysis=analysis)
    assert traced == [] and found == []
    assert summary["removed"][0]["id"] == block
    assert (tmp_path / "out" / "model.onnx").is_file()


def _with_input(model: onnx.ModelProto, dims) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.metadata_props[:]
    shape = copy.graph.input[0].type.tensor_type.shape
    for d, v in zip(shape.dim, dims):
        if isinstance(v, int):
            d.dim_value = v
        else:
            d.dim_param = v
    return copy


def test_input_shape_is_resolved_in_one_place(resnet20_onnx):
    model = load_model(resnet20_onnx)
    assert model_input_shape(model) == [1, 3, 32, 32]  # what export recorded
    assert analyze(model).input_shape == [1, 3, 32, 32]
    assert model_input_shape(_with_input(model, ["N", 3, 32, 32])) == [1, 3, 32, 32]  # the graph's dims
    open_hw = _with_input(model, ["N", 3, "H", "W"])
    assert model_input_shape(open_hw) is None
    with pytest.raises(InputError, match="input shape is not fixed"):
        require_input_shape(open_hw, "m.onnx")
    # Older exporters list initializers among the graph inputs, sometimes first: the data input is the one.
    listed = _with_input(model, ["N", 3, 32, 32])
    weight = listed.graph.initializer[0]
    listed.graph.input.insert(0, onnx.helper.make_tensor_value_info(weight.name, weight.data_type, list(weight.dims)))
    assert model_input_shape(listed) == [1, 3, 32, 32]


def test_group_of_maps_each_channel_to_its_group(resnet20_onnx):
    analysis = analyze(load_model(resnet20_onnx))
    seen = set()
    for sl in analysis.slices:
        for channel in sl.ids.tolist():
            group = analysis.group_of(channel)
            if group is not None:
                assert int(analysis.roots[channel]) in group.classes.tolist()
                seen.add(group.id)
    assert {g.id for g in analysis.groups if g.prunable} <= seen  # every prunable group slices some parameter
    assert analysis.group_of(int(analysis.group("conv1").classes[0])).id == "conv1"
