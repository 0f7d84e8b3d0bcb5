"""`ultralytics:NAME` specs: YOLO models built from the package's YAML, or loaded from a local `.pt`.

ultralytics is AGPL-3.0, so it is an optional extra (`pip install -e .[yolo]`), imported only here and
only when such a spec is used. Nothing is ever downloaded: YOLO_OFFLINE is set before the import, a
`.pt` must be a local file, and ultralytics' own download helper is replaced by a refusal.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

from torch import nn

from graphs.errors import InputError

__all__ = ["build_ultralytics"]

INSTALL_HINT = "ultralytics is not installed: `pip install -e .[yolo]` (an optional extra, AGPL-3.0)"
_TASK_CLASSES = {"detect": "DetectionModel", "segment": "SegmentationModel", "classify": "ClassificationModel",
                 "pose": "PoseModel", "obb": "OBBModel"}


def _import_tasks():
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")  # its banner and settings notes are not ours to print
    try:
        import ultralytics.nn.tasks as tasks
        import ultralytics.utils.downloads  # noqa: F401  (patched by _no_downloads)
    except ImportError:
        raise InputError(INSTALL_HINT) from None
    return tasks


def _refuse_download(*args, **kwargs):
    url = kwargs.get("url") or (args[0] if args else "a file")
    raise InputError(f"ultralytics tried to download {url}: compress never downloads; "
                     "pass a local .pt path, or build from the YAML and pass --checkpoint")


@contextmanager
def _no_downloads(tasks):
    # Every ultralytics fetch ends in downloads.safe_download (attempt_download_asset, check_file).
    with mock.patch.object(sys.modules["ultralytics.utils.downloads"], "safe_download", _refuse_download):
        yield


def build_ultralytics(name: str, num_classes: int | None = None) -> nn.Module:
    """The torch module behind `ultralytics:NAME`: `yolov8n.yaml`-style names or a local `.pt` path."""
    tasks = _import_tasks()
    with _no_downloads(tasks):
        if name.endswith(".pt"):
            return _load_pt(tasks, name, num_classes)
        if not name.endswith((".yaml", ".yml")):
            raise InputError(f"ultralytics spec {name!r} names neither a model YAML (yolov8n.yaml) "
                             "nor a local .pt file")
        try:
            cfg = tasks.yaml_model_load(name)
        except (FileNotFoundError, OSError):
            raise InputError(f"ultralytics has no model YAML {name!r} (e.g. yolov8n.yaml, yolo11n-seg.yaml)") from None
        task = tasks.guess_model_task(cfg)
        cls = getattr(tasks, _TASK_CLASSES.get(task, ""), None)
        if cls is None:
            raise InputError(f"ultralytics model {name!r} is a {task!r} model; supported: {', '.join(_TASK_CLASSES)}")
        return cls(cfg, nc=num_classes, verbose=False)


def _load_pt(tasks, name: str, num_classes: int | None) -> nn.Module:
    if not Path(name).is_file():
        raise InputError(f"ultralytics weights {name} are not a local file: compress never downloads; "
                         "pass a local .pt path, or build from the YAML and pass --checkpoint")
    if num_classes is not None:
        raise InputError("--num-classes cannot change a .pt model; build it from its YAML instead")
    try:
        # An ultralytics .pt pickles its module classes: trusted like a path.py:factory spec.
        model, _ = tasks.load_checkpoint(name)
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{name} is not an ultralytics checkpoint: {type(e).__name__}: "
                         f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None
    return model.float()
