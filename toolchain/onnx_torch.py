"""A trainable torch module built from an ONNX graph that has no torch source, and the trained values
written back into that graph by initializer name.

torch has no ONNX importer. onnx2torch (Apache-2.0, pure Python, maintained by ENOT-AutoDL, one small
wheel whose only dependencies torch, torchvision, onnx and numpy are ours already) converts node by node
into a torch.fx GraphModule: Conv, ConvTranspose, Gemm and the normalisations become torch layers whose
Parameters hold the initializers' values; every other constant stays a frozen buffer. Which initializer
each of those tensors came from is read off the node's inputs (`LAYER_INPUTS`), so the write-back needs
no guessing by value. It is an optional extra: `pip install -e .[onnx2torch]`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from graphs.errors import InputError
from graphs.onnx_io import constants_to_initializers
from graphs.parity import Parity, parity, run_onnx
from toolchain.outputs import flatten_outputs

__all__ = ["INSTALL_HINT", "Converted", "module_from_onnx", "onnx_with_values", "onnx_parity", "verify_finetuned"]

INSTALL_HINT = "fine-tuning an ONNX model without its torch source needs onnx2torch: pip install -e .[onnx2torch]"
MAX_OPSET = 17  # onnx2torch 1.5 registers converters up to opset 17 for the ops CNNs use
# op type -> the converted layer's tensors, in the order of the node's inputs after the data input
LAYER_INPUTS = {
    "Conv": ("weight", "bias"),
    "ConvTranspose": ("weight", "bias"),
    "Gemm": ("weight", "bias"),
    "BatchNormalization": ("weight", "bias", "running_mean", "running_var"),
    "InstanceNormalization": ("weight", "bias"),
    "LayerNormalization": ("weight", "bias"),
}


@dataclass
class Converted:
    """The torch module, and for each of its trained tensors (state-dict key) the initializer it
    came from and how its torch value maps back (Gemm: transposed and scaled)."""
    module: torch.nn.Module
    sources: dict[str, str] = field(default_factory=dict)           # state key -> initializer name
    to_onnx: dict[str, tuple[bool, float]] = field(default_factory=dict)  # state key -> (transpose, scale)


def _import_onnx2torch():
    try:
        import onnx2torch
        from onnx2torch.onnx_graph import OnnxGraph
    except ImportError:
        raise InputError(INSTALL_HINT) from None
    return onnx2torch.convert, OnnxGraph


def _normalized(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with Constant nodes and Identity-shared initializers (the legacy exporter's) as initializers
    of their own: the graph the values are read from and written back into."""
    return constants_to_initializers(onnx.ModelProto.FromString(model.SerializeToString()))


def _for_converter(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy onnx2torch can read and train at any batch size: opset <= 17, and Reshape targets that
    fixed the export's batch of 1 made batch-free."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), MAX_OPSET)
    if opset > MAX_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, MAX_OPSET)
        except Exception as exc:  # the converter raises bare RuntimeErrors per op
            raise InputError(f"the ONNX model's opset {opset} cannot be converted to {MAX_OPSET} for onnx2torch "
                             f"({str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__})") from None
    _batch_free_reshapes(model)
    return model


def _batch_free_reshapes(model: onnx.ModelProto) -> None:
    """Reshape to a constant [1, ...] of an activation (an export at batch 1) -> [-1, ...]; allowzero
    dropped where the target holds no 0 (then it means nothing, and onnx2torch refuses it)."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    dims = graph.input[0].type.tensor_type.shape.dim if graph.input else []
    batch = dims[0].dim_value if dims and dims[0].HasField("dim_value") else 0
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        target = numpy_helper.to_array(inits[node.input[1]]).copy()
        if 0 in target:
            continue
        for attr in [a for a in node.attribute if a.name == "allowzero"]:
            node.attribute.remove(attr)
        if batch == 1 and target.ndim == 1 and len(target) > 1 and target[0] == 1 and -1 not in target \
                and node.input[0] not in inits:
            target[0] = -1
            fresh = numpy_helper.from_array(target, f"{node.input[1]}__batch_free_{node.name}")
            graph.initializer.append(fresh)
            node.input[1] = fresh.name


def module_from_onnx(model: onnx.ModelProto) -> Converted:
    """onnx2torch's module for `model`, its trained tensors mapped to initializer names; an initializer
    feeding several layers becomes one shared Parameter (as it is one tensor in the graph)."""
    convert, OnnxGraph = _import_onnx2torch()
    base = _normalized(model)
    prepared = _for_converter(base)
    try:
        module = convert(prepared)
    except (NotImplementedError, KeyError, ValueError, RuntimeError) as exc:
        raise InputError(f"onnx2torch cannot convert this graph: {type(exc).__name__}: "
                         f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}") from None
    converted = Converted(module)
    owners: dict[str, torch.Tensor] = {}
    names = {i.name for i in base.graph.initializer}
    for node_name, node in OnnxGraph(prepared.graph).nodes.items():
        layer = getattr(module, node_name, None)
        for attr, value_name in zip(LAYER_INPUTS.get(node.operation_type, ()), node.input_values[1:]):
            tensor = getattr(layer, attr, None)
            if not isinstance(tensor, torch.Tensor) or value_name not in names:
                continue  # a functional fallback (no layer) keeps the initializer as a frozen buffer
            key = f"{node_name}.{attr}"
            converted.sources[key] = value_name
            converted.to_onnx[key] = _gemm_inverse(node) if node.operation_type == "Gemm" and attr == "weight" \
                else (False, _gemm_beta(node) if node.operation_type == "Gemm" else 1.0)
            if value_name in owners and isinstance(tensor, torch.nn.Parameter):
                if owners[value_name].shape != tensor.shape or converted.to_onnx[key][0]:
                    raise InputError(f"initializer {value_name} feeds layers of different shapes; cannot train it")
                setattr(layer, attr, owners[value_name])
            owners.setdefault(value_name, getattr(layer, attr))
    _require_all_mapped(converted)
    return converted


def _gemm_inverse(node) -> tuple[bool, float]:
    """onnx2torch's Linear weight is alpha * (B if transB else B^T): back to B."""
    return (not node.attributes.get("transB", 0), 1.0 / node.attributes.get("alpha", 1.0))


def _gemm_beta(node) -> float:
    return 1.0 / node.attributes.get("beta", 1.0)


def _require_all_mapped(converted: Converted) -> None:
    mapped = set(converted.sources)
    for name, _ in converted.module.named_parameters(remove_duplicate=False):
        if name not in mapped:
            raise InputError(f"onnx2torch made a trainable tensor {name} that does not come from one initializer; "
                             "cannot write it back")


def onnx_with_values(model: onnx.ModelProto, converted: Converted) -> onnx.ModelProto:
    """A copy of `model` with the module's current values in the initializers they came from (constants
    and Identity-shared initializers made initializers of their own, as the module was built)."""
    model = _normalized(model)
    state = converted.module.state_dict()
    by_name = {i.name: i for i in model.graph.initializer}
    for key, name in converted.sources.items():
        transpose, scale = converted.to_onnx[key]
        value = state[key].detach().cpu().double() * scale
        value = (value.T if transpose else value).numpy()
        init = by_name[name]
        if tuple(value.shape) != tuple(init.dims):
            raise InputError(f"{key} has shape {tuple(value.shape)}, initializer {name} {tuple(init.dims)}")
        dtype = onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
        init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value.astype(dtype)), name))
    return model


def onnx_parity(module: torch.nn.Module, model: onnx.ModelProto, input_shape, seed: int = 0) -> Parity:
    """The module (eval mode) and `model` under onnxruntime on one seeded input, leaf by leaf."""
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal(tuple(input_shape)).astype(np.float32))
    with torch.no_grad():
        outs = [o.numpy() for o in flatten_outputs(module.eval()(x))]
    return parity(outs, run_onnx(model, {model.graph.input[0].name: x.numpy()}))


def verify_finetuned(directory, seed: int = 0) -> Parity:
    """A fine-tuned ONNX-only DIR no longer equals its masked source: weights.safetensors must hold
    model.onnx's initializers exactly, and onnx2torch's module of model.onnx must compute what
    onnxruntime does (the check finetune made before writing)."""
    from pathlib import Path

    from safetensors.torch import load_file

    from graphs.onnx_io import initializer_arrays, load_model, require_input_shape

    directory = Path(directory)
    model = load_model(directory / "model.onnx")
    arrays = initializer_arrays(model)
    try:
        weights = load_file(str(directory / "weights.safetensors"))
    except Exception as exc:  # SafetensorError: truncated or not a safetensors file
        raise InputError(f"{directory}/weights.safetensors is unreadable ({type(exc).__name__})") from None
    if any(k not in arrays or not np.array_equal(v.numpy(), arrays[k]) for k, v in weights.items()):
        return Parity(float("inf"), 0.0, 0.0)  # the pair disagrees: a failed check, exit 1
    return onnx_parity(module_from_onnx(model).module, model, require_input_shape(model, str(directory)), seed)
