"""A pruned YOLO handed back to ultralytics: the module `compress` rebuilds from DIR trains under
ultralytics' own detection loss (v8DetectionLoss via DetectionModel.loss), and distillation gives the
teacher the student's train-mode output structure. No downloads: the labelled batch is built here from
real Fashion-MNIST images pasted on a canvas at known boxes."""
import json

import numpy as np
import pytest
import torch

from graphs.errors import InputError
from tests.test_cli import invoke
from toolchain.outputs import distill_loss, flatten_outputs
from toolchain.pruned_dir import load_pruned_module
from toolchain.zoo import build_model

pytest.importorskip("ultralytics", reason="the optional extra .[yolo] is not installed")
SIZE = 64


@pytest.fixture(scope="module")
def pruned_yolo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("yolo_trainer")
    onnx_path, out = folder / "yolov8n.onnx", folder / "pruned"
    result = invoke("export", "ultralytics:yolov8n.yaml", "--input-shape", f"1,3,{SIZE},{SIZE}", "-o", onnx_path)
    assert result.exit_code == 0, result.output
    result = invoke("prune", onnx_path, "--ratio", "0.3", "--round-to", "8", "-o", out)
    assert result.exit_code == 0, result.output
    return out


def labelled_batch(count=4, offset=0):
    """`count` 64x64 images, each holding two real Fashion-MNIST items at known places: ultralytics'
    batch dict (img in [0,1], batch_idx, cls, bboxes as normalised centre x, y, width, height)."""
    from toolchain.data_sources import source

    try:
        fashion = source("fashion-mnist")
    except InputError as exc:
        pytest.skip(str(exc))
    rng = np.random.default_rng(0)
    img = torch.zeros(count, 3, SIZE, SIZE)
    idx, cls, boxes = [], [], []
    for b in range(count):
        for k, (top, left) in enumerate([(rng.integers(0, 8), rng.integers(0, 8)), (rng.integers(34, 36), rng.integers(34, 36))]):
            j = 60_000 + offset + 2 * b + k  # the published test images
            img[b, :, top:top + 28, left:left + 28] = torch.from_numpy(fashion.images[j, 0] / 255.0).float()
            idx.append(b)
            cls.append(int(fashion.labels[j]))
            boxes.append([(left + 14) / SIZE, (top + 14) / SIZE, 28 / SIZE, 28 / SIZE])
    return {"img": img, "batch_idx": torch.tensor(idx, dtype=torch.float32),
            "cls": torch.tensor(cls, dtype=torch.float32)[:, None], "bboxes": torch.tensor(boxes, dtype=torch.float32)}


def test_pruned_yolo_trains_under_ultralytics_detection_loss(pruned_yolo):
    from ultralytics.cfg import get_cfg

    torch.manual_seed(0)
    model = load_pruned_module(pruned_yolo)
    summary = json.loads((pruned_yolo / "summary.json").read_text())
    params = sum(p.numel() for p in model.parameters())
    assert params < 0.7 * sum(p.numel() for p in build_model(summary["spec"]).parameters())  # the pruned widths
    model.args = get_cfg()  # what ultralytics' trainer attaches (box/cls/dfl gains)
    batch = labelled_batch()
    model.train()
    loss, items = model.loss(batch)
    assert torch.isfinite(loss).all() and float(loss.sum()) > 0, items
    loss.sum().backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad and ".dfl." not in n]
    assert len(trainable) == len(list(model.parameters())) - 1  # all but DFL's fixed projection
    missing = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing[:5]
    flowing = [n for n, p in trainable if p.grad.abs().sum() > 0]
    assert len(flowing) > 0.95 * len(trainable), sorted({n for n, _ in trainable} - set(flowing))[:5]
    before = {n: p.detach().clone() for n, p in trainable}
    torch.optim.SGD([p for _, p in trainable], lr=1e-4).step()  # one small step of plain gradient descent
    changed = [n for n, p in trainable if not torch.equal(before[n], p)]
    assert len(changed) > 0.9 * len(flowing)  # (a gradient below float32's step at lr 1e-4 leaves a few)
    with torch.no_grad():
        after, _ = model.loss(batch)
    assert torch.isfinite(after).all() and not torch.equal(after, loss.detach())


def test_distillation_teacher_has_the_students_train_mode_structure(pruned_yolo):
    """Detect returns the raw per-level maps in train mode and (decoded, raw) in eval mode: the teacher
    must run in the student's structure, with inference-time BatchNorm."""
    from toolchain.distill import teacher_mode
    from toolchain.finetune import teacher_for

    student, teacher = load_pruned_module(pruned_yolo).train(), teacher_for(pruned_yolo)
    x = labelled_batch()["img"]
    s = flatten_outputs(student(x))
    with torch.no_grad():
        assert len(flatten_outputs(teacher.eval()(x))) != len(s)  # plain eval mode: another structure
        t = teacher_mode(teacher)(x)
    assert [tuple(a.shape) for a in s] == [tuple(b.shape) for b in flatten_outputs(t)]
    assert not any(m.training for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.isfinite(distill_loss(s, t))


def write_detection_set(root, count: int, offset: int) -> None:
    """A YOLO-format split under root/images and root/labels (one .txt per image: class cx cy w h)."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir(parents=True)
    batch = labelled_batch(count, offset)
    for b in range(count):
        pixels = (batch["img"][b].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{b}.png")
        rows = [f"{int(c)} " + " ".join(f"{v:.6f}" for v in box)
                for i, c, box in zip(batch["batch_idx"], batch["cls"][:, 0], batch["bboxes"]) if int(i) == b]
        (root / "labels" / f"{b}.txt").write_text("\n".join(rows) + "\n")


def test_pruned_yolo_through_ultralytics_trainer_train(pruned_yolo, tmp_path, monkeypatch):
    """The README's recipe, run: DetectionTrainer given the pruned module trains it for an epoch on a
    local YOLO-format dataset (its loss, data pipeline, validation and checkpointing), and the module
    it saves as best.pt keeps the pruned widths. Offline: no weights, fonts or analytics fetched."""
    from ultralytics.models.yolo.detect import DetectionTrainer

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    write_detection_set(tmp_path / "data" / "train", 8, 0)
    write_detection_set(tmp_path / "data" / "val", 4, 100)
    names = {i: f"class{i}" for i in range(80)}  # yolov8n.yaml's 80-class head; Fashion-MNIST uses 0-9
    (tmp_path / "data.yaml").write_text(json.dumps({"path": str(tmp_path / "data"), "train": "train/images",
                                                    "val": "val/images", "names": names}))
    model = load_pruned_module(pruned_yolo)
    widths = [tuple(p.shape) for p in model.parameters()]
    trainer = DetectionTrainer(overrides={
        "model": "yolov8n.yaml", "data": str(tmp_path / "data.yaml"), "imgsz": SIZE, "epochs": 1, "batch": 4,
        "workers": 0, "device": "cpu", "amp": False, "plots": False, "project": str(tmp_path / "runs"),
        "name": "pruned", "exist_ok": True, "pretrained": False, "val": True})
    trainer.model = model
    trainer.train()
    losses = trainer.tloss.values() if isinstance(trainer.tloss, dict) else [trainer.tloss]
    assert trainer.epoch == 0 and all(torch.isfinite(torch.as_tensor(v)).all() for v in losses), trainer.tloss
    assert "metrics/mAP50(B)" in trainer.metrics  # the validation pass ran on the val split
    from ultralytics.nn.tasks import load_checkpoint

    best, _ = load_checkpoint(trainer.best)  # ultralytics' own checkpoint, read its own way
    assert [tuple(p.shape) for p in best.parameters()] == widths
