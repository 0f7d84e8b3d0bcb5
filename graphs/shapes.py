"""Static tensor shapes, and the values of small integer tensors computed from shapes.

Exporters compute reshape targets and slice bounds from `Shape` at run time (shufflenet's channel
shuffle, `chunk`). Channel analysis needs their values for the exported input size, so a tiny numpy
evaluator folds those shape computations; anything it does not know stays None.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

# A symbolic (batch) dimension is evaluated as this prime, so it cannot be mistaken for a channel count.
SYMBOLIC_DIM = 97


def tensor_shapes(model: onnx.ModelProto) -> dict[str, tuple | None]:
    """name -> shape tuple with symbolic dims as None (None when the rank is unknown)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:
        inferred = model
    shapes: dict[str, tuple | None] = {}
    graph = inferred.graph
    for info in list(graph.value_info) + list(graph.input) + list(graph.output):
        ttype = info.type.tensor_type
        if not ttype.HasField("shape"):
            shapes[info.name] = None
            continue
        shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim)
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def measured_shapes(model: onnx.ModelProto, names: list[str]) -> dict[str, tuple]:
    """Shapes of `names` from one onnxruntime run at the graph's own input size (symbolic dims 1)."""
    import onnxruntime as ort

    probe = onnx.ModelProto.FromString(model.SerializeToString())
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                              for n in names if n not in known)
    inits = {i.name for i in probe.graph.initializer}
    feeds = {}
    for inp in probe.graph.input:
        if inp.name in inits:
            continue
        dims = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
        feeds[inp.name] = np.zeros(dims, dtype)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        values = session.run(names, feeds)
    except Exception:  # a graph that does not run keeps its unknown shapes (no blocks there)
        return {}
    return {n: (None, *v.shape[1:]) for n, v in zip(names, values)}


class ConstEvaluator:
    """Evaluates integer/shape sub-computations with numpy; `value(name)` is an array or None.

    A `Shape` whose input inference left partly unknown (beyond the batch) is read from one
    onnxruntime run at the graph's own input size, done once for all such inputs: TF-style "same"
    padding (timm's tf_* models) computes its pads from the spatial size, and once one of those pads
    is computed at run time, inference loses every spatial size after it, so without the run no pad
    of EfficientNet-Lite0 could be evaluated and its four stride-2 expansion groups stayed frozen."""

    def __init__(self, model: onnx.ModelProto, shapes: dict[str, tuple | None]):
        self.model = model
        self.shapes = shapes
        self.measured: dict[str, tuple] | None = None
        self.producer = {out: node for node in model.graph.node for out in node.output}
        self.values: dict[str, np.ndarray | None] = {
            init.name: numpy_helper.to_array(init) for init in model.graph.initializer
        }

    def value(self, name: str) -> np.ndarray | None:
        if name == "":
            return None
        if name not in self.values:
            self.values[name] = None  # guards against cycles
            node = self.producer.get(name)
            result = None
            if node is not None:
                try:
                    result = self._evaluate(node, name)
                except Exception:
                    result = None
            self.values[name] = result
        return self.values[name]

    def _shape(self, name: str) -> tuple | None:
        shape = self.shapes.get(name)
        if shape is not None and all(d is not None for d in shape[1:]):
            return shape
        if self.measured is None:
            unknown = {n.input[0] for n in self.model.graph.node if n.op_type == "Shape"
                       and (self.shapes.get(n.input[0]) is None or None in self.shapes[n.input[0]][1:])}
            self.measured = measured_shapes(self.model, sorted(unknown)) if unknown else {}
        return self.measured.get(name, shape)

    def _evaluate(self, node: onnx.NodeProto, name: str) -> np.ndarray | None:
        op = node.op_type
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if op == "Shape":
            shape = self._shape(node.input[0])
            if shape is None:
                return None
            full = np.array([SYMBOLIC_DIM if d is None else d for d in shape], dtype=np.int64)
            return full[attrs.get("start", 0): attrs.get("end", len(full))]
        if op == "Constant":
            return numpy_helper.to_array(attrs["value"]) if "value" in attrs else None
        args = [self.value(i) if i else None for i in node.input]
        if any(a is None for a in args[:1]) or (op not in ("Slice", "Unsqueeze", "Squeeze", "Clip") and any(a is None for a in args)):
            return None
        if op in ARITHMETIC:
            return _arithmetic(op, args, attrs)
        if op == "Gather":
            return np.take(args[0], args[1], axis=attrs.get("axis", 0))
        if op == "Unsqueeze":
            axes = args[1] if len(args) > 1 and args[1] is not None else attrs.get("axes")
            out = args[0]
            for ax in sorted(int(a) % (out.ndim + len(axes)) for a in axes):
                out = np.expand_dims(out, ax)
            return out
        if op == "Squeeze":
            axes = args[1] if len(args) > 1 and args[1] is not None else attrs.get("axes")
            return np.squeeze(args[0], axis=tuple(int(a) for a in axes)) if axes is not None else np.squeeze(args[0])
        if op == "Concat":
            return np.concatenate([np.atleast_1d(a) for a in args], axis=attrs.get("axis", 0))
        if op == "Slice":
            data, starts, ends = args[0], args[1], args[2]
            axes = args[3] if len(args) > 3 and args[3] is not None else range(len(starts))
            steps = args[4] if len(args) > 4 and args[4] is not None else [1] * len(starts)
            index = [slice(None)] * data.ndim
            for s, e, a, st in zip(starts, ends, axes, steps):
                index[int(a)] = slice(int(s), int(e), int(st))
            return data[tuple(index)]
        if op == "Transpose":
            return np.transpose(args[0], attrs.get("perm"))
        if op == "Identity":
            return args[0]
        if op == "Reshape":
            return args[0].reshape(args[1])
        if op == "ConstantOfShape":
            fill = numpy_helper.to_array(attrs["value"]) if "value" in attrs else np.zeros(1, np.float32)
            return np.full(args[0], fill[0], dtype=fill.dtype)
        return None


ARITHMETIC = ("Add", "Sub", "Mul", "Div", "Max", "Min", "Clip", "Floor", "Ceil", "Cast")


def _arithmetic(op: str, args: list, attrs: dict) -> np.ndarray:
    """The element-wise ops shape computations use (pads, sizes, bounds)."""
    if op in ("Add", "Sub", "Mul"):
        return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[op](args[0], args[1])
    if op == "Div":
        a, b = args
        return a // b if a.dtype.kind in "iu" and b.dtype.kind in "iu" else a / b
    if op in ("Max", "Min"):
        return {"Max": np.maximum, "Min": np.minimum}[op].reduce(np.broadcast_arrays(*args))
    if op == "Clip":  # max(pad, 0) of TF-style "same" padding
        low = args[1] if len(args) > 1 and args[1] is not None else attrs.get("min")
        high = args[2] if len(args) > 2 and args[2] is not None else attrs.get("max")
        out = args[0]
        out = np.maximum(out, np.asarray(low, out.dtype)) if low is not None else out
        return np.minimum(out, np.asarray(high, out.dtype)) if high is not None else out
    if op in ("Floor", "Ceil"):
        return getattr(np, op.lower())(args[0])
    if op == "Cast":
        return args[0].astype(onnx.helper.tensor_dtype_to_np_dtype(attrs["to"]))
