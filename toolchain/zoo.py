"""MODEL specs -> torch modules, plus checkpoint loading.

Spec forms: `torchvision:NAME`, `timm:NAME`, `builtin:NAME`, `ultralytics:NAME.yaml|PATH.pt` (optional
extra, toolchain.ultralytics_models), `pretrained:NAME` (packaged ImageNet weights, toolchain.pretrained),
`path/to/file.py:factory`. Only the last form (and a local
ultralytics `.pt`, which pickles its classes) executes user code. Weights are never downloaded; trained weights come from `checkpoint`
(safetensors, or torch.load with weights_only=True so a pickle cannot run code).
Every bad input raises `InputError` with a one-line message.
"""

from __future__ import annotations

import warnings

import difflib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from graphs.errors import InputError
from toolchain import cifar_models

__all__ = ["build_model", "default_input_shape", "list_builtin", "load_checkpoint", "parse_model_spec",
           "read_state_dict"]

_BUILTIN = {"resnet20": cifar_models.resnet20, "resnet56": cifar_models.resnet56,
            "vgg19_bn": cifar_models.vgg19_bn}
_PREFIXES = ("torchvision", "timm", "builtin", "ultralytics", "pretrained")


def list_builtin() -> list[str]:
    return sorted(_BUILTIN)


def parse_model_spec(spec: str) -> tuple[str, str]:
    """Split a spec into (kind, name); kind is one of torchvision/timm/builtin/pretrained/path."""
    if not isinstance(spec, str) or ":" not in spec:
        raise InputError(f"model spec {spec!r} is not of the form PREFIX:NAME "
                         f"(prefixes: {', '.join(_PREFIXES)}, or path/to/file.py:factory)")
    prefix, _, name = spec.partition(":")
    if prefix in _PREFIXES:
        if not name:
            raise InputError(f"model spec {spec!r} has no model name after '{prefix}:'")
        return prefix, name
    path, _, factory = spec.rpartition(":")
    if path.endswith(".py"):
        if not factory:
            raise InputError(f"model spec {spec!r} has no factory name after the file")
        return "path", spec
    raise InputError(f"unknown model spec prefix {prefix!r} in {spec!r} "
                     f"(expected {', '.join(_PREFIXES)}, or path/to/file.py:factory)")


def _unknown(kind: str, name: str, known: list[str]) -> InputError:
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    hint = f"; did you mean: {', '.join(close)}" if close else ""
    return InputError(f"unknown {kind} model {name!r}{hint}")


def _import_file(path_str: str) -> ModuleType:
    path = Path(path_str)
    if not path.is_file():
        raise InputError(f"model file not found: {path_str}")
    # Unique module name per resolved path, so two files called model.py do not collide.
    mod_name = f"_compress_user_model_{abs(hash(str(path.resolve())))}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise InputError(f"cannot import model file {path_str}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # user code: any failure is bad input, reported in one line
        raise InputError(f"importing {path_str} failed: {type(e).__name__}: {_first_line(e)}") from e
    sys.modules[mod_name] = module
    return module


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _construct(kind: str, name: str, num_classes: int | None) -> nn.Module:
    kw = {} if num_classes is None else {"num_classes": num_classes}
    if kind == "builtin":
        if name not in _BUILTIN:
            raise _unknown("builtin", name, list_builtin())
        return _BUILTIN[name](**kw)
    if kind == "torchvision":
        import torchvision

        known = torchvision.models.list_models()
        if name not in known:
            raise _unknown("torchvision", name, known)
        return torchvision.models.get_model(name, **_no_download_weights(name), **kw)
    if kind == "ultralytics":
        from toolchain.ultralytics_models import build_ultralytics

        return build_ultralytics(name, num_classes)
    if kind == "pretrained":
        from toolchain.pretrained import build_pretrained

        return build_pretrained(name, num_classes)
    if kind == "timm":
        import timm

        if not timm.is_model(name):
            raise _unknown("timm", name, timm.list_models())
        return timm.create_model(name, pretrained=False, **kw)
    path, _, factory_name = name.rpartition(":")
    module = _import_file(path)
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise InputError(f"factory {factory_name!r} not found in {path}")
    try:
        model = factory(**kw)
    except Exception as e:
        raise InputError(f"{path}:{factory_name}() failed: {type(e).__name__}: {_first_line(e)}") from e
    if not isinstance(model, nn.Module):
        raise InputError(f"{path}:{factory_name}() returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _no_download_weights(name: str) -> dict:
    """weights=None, and weights_backbone=None where the builder has one: segmentation and detection
    builders default to downloading ImageNet backbone weights (a URLError here)."""
    import inspect

    import torchvision

    params = inspect.signature(torchvision.models.get_model_builder(name)).parameters
    return {"weights": None, **({"weights_backbone": None} if "weights_backbone" in params else {})}


def build_model(spec: str, *, num_classes: int | None = None,
                checkpoint: str | None = None) -> nn.Module:
    """Build the model named by `spec`, load `checkpoint` if given; eval mode.

    The random init is seeded (without touching the caller's RNG): exporting one spec twice gives one
    model hash, so latency tables measured for it are found again (the store is keyed by hash).
    """
    kind, name = parse_model_spec(spec)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _construct(kind, name, num_classes)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval()


def default_input_shape(spec: str) -> tuple[int, ...]:
    kind, name = parse_model_spec(spec)
    if kind == "builtin":
        return (1, 3, 32, 32)
    if kind == "ultralytics":
        return (1, 3, 640, 640)  # the size the YOLO models are trained and deployed at
    if kind == "pretrained":
        from toolchain.pretrained import PRETRAINED

        if name in PRETRAINED:
            return (1, 3, PRETRAINED[name].size, PRETRAINED[name].size)
    if kind == "path":
        shape = getattr(_import_file(name.rpartition(":")[0]), "INPUT_SHAPE", None)
        if shape is not None:
            return tuple(int(s) for s in shape)
    return (1, 3, 224, 224)


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"checkpoint not found: {path}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(p), device="cpu")
        else:
            with warnings.catch_warnings():  # torch warns about odd pickle protocols: one line, not three
                warnings.simplefilter("ignore")
                obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:
        # weights_only refuses pickles that carry classes/code: say which global it refused.
        reason = _unpickler_reason(e)
        if reason and "global" in reason.lower():
            raise InputError(f"checkpoint {path} is not a weights-only state dict "
                             f"(refused to unpickle code): {reason}") from e
        if reason:
            raise InputError(f"checkpoint {path} is unreadable: not a torch checkpoint ({reason})") from e
        raise InputError(f"checkpoint {path} is unreadable: {type(e).__name__}: {_first_line(e)}") from e
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"checkpoint {path} does not hold a state dict of tensors "
                         "(nor one under 'state_dict' or 'model')")
    if obj and all(k.startswith("module.") for k in obj):  # saved from DDP / DataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _unpickler_reason(e: BaseException) -> str | None:
    """The useful line of torch's long weights_only error, e.g. 'Unsupported global: GLOBAL x.Y'."""
    if type(e).__name__ != "UnpicklingError":
        return None
    m = re.search(r"WeightsUnpickler error:\s*(\S.*)", str(e))
    text = m.group(1) if m else _first_line(e)
    return text.split(" was not an allowed")[0].strip()


def _few(names: list[str], n: int = 3) -> str:
    more = f" (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def load_checkpoint(model: nn.Module, path: str) -> nn.Module:
    """Load a state dict into `model` in place; mismatches are InputError naming the first few."""
    state = read_state_dict(path)
    own = model.state_dict()
    # Older checkpoints may lack num_batches_tracked; it does not affect inference.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_few(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {_few(shapes)}")
    if problems:
        raise InputError(f"checkpoint {path} does not fit the model: {'; '.join(problems)}")
    model.load_state_dict(state, strict=False)
    return model
