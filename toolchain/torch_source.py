"""The torch module behind an exported ONNX model: built from the spec export recorded, holding the
ONNX's own values (the join by parameter name)."""
from __future__ import annotations

import numpy as np
import onnx
import torch

from graphs.errors import InputError
from graphs.onnx_io import initializer_arrays, model_metadata
from toolchain.zoo import build_model


def torch_module_for(model: onnx.ModelProto, spec: str | None = None) -> tuple[torch.nn.Module, str]:
    """The torch module behind an exported model, holding the ONNX's own values (the join by name)."""
    spec = spec or model_metadata(model).get("compress.spec")
    if not spec:
        raise InputError("the ONNX model does not say which torch model it came from: export it with "
                         "`compress export` or pass --spec")
    classes = model_metadata(model).get("compress.num_classes")
    module = build_model(spec, num_classes=int(classes) if classes else None)
    values = initializer_arrays(model)
    state = module.state_dict()
    with torch.no_grad():
        for name, tensor in state.items():
            if name in values:
                if tuple(values[name].shape) != tuple(tensor.shape):
                    raise InputError(f"spec {spec} does not match the ONNX model: {name} has shape "
                                     f"{tuple(values[name].shape)} in the ONNX, {tuple(tensor.shape)} in torch")
                tensor.copy_(torch.from_numpy(np.array(values[name])))
    return module, spec
