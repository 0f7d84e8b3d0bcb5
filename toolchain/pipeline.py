"""`compress pipeline RECIPE.yaml`: train? -> export -> profile -> prune -> finetune -> build? -> report.

Every stage's outputs stay in the recipe's `out` folder, and `out/pipeline.json` records each
finished stage with a fingerprint of its settings and of the stages before it: a re-run skips
what is finished and unchanged, and redoes a stage (and everything after it) whose inputs changed.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable
from graphs.deps import analyze
from graphs.onnx_io import load_model
from graphs.atomic import write_json
from toolchain.recipe import Recipe


class Stages:
    """Bookkeeping of finished stages in out/pipeline.json."""

    def __init__(self, out: Path, log: Callable[[str], None]):
        self.path, self.log = out / "pipeline.json", log
        self.done = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.chain = ""

    def run(self, name: str, settings: dict, outputs: list[Path], fn: Callable[[], dict]) -> dict:
        fingerprint = hashlib.sha256(json.dumps([self.chain, settings], sort_keys=True, default=str).encode()).hexdigest()
        self.chain = fingerprint
        record = self.done.get(name)
        if record and record["fingerprint"] == fingerprint and all(p.exists() for p in outputs):
            self.log(f"[{name}] finished earlier, skipped")
            return record["result"]
        self.log(f"[{name}] running")
        result = fn()
        self.done[name] = {"fingerprint": fingerprint, "result": result}
        write_json(self.done, self.path)
        return result


def run_pipeline(recipe: Recipe, log: Callable[[str], None] = print, progress=None) -> dict:
    from toolchain.data import dataset_info
    from toolchain.latency.backends import get_backend
    from toolchain.zoo import default_input_shape

    out = Path(recipe.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(out, log)
    shape = tuple(recipe.input_shape or default_input_shape(recipe.model))
    num_classes = dataset_info(recipe.data, seed=recipe.seed)["num_classes"] if recipe.train else None
    baseline = out / "baseline.safetensors"
    results: dict = {}
    config = _profile_config(recipe)
    # The backend the budget is about is opened now: one this host lacks (CUDA, TensorRT) fails in a second,
    # not after the training stage.
    get_backend(config.backend, **config.backend_options())

    if recipe.train:
        results["train"] = stages.run("train", recipe.train.model_dump() | {"model": recipe.model, "data": recipe.data,
                                                                     "normalize": recipe.normalize},
                                      [baseline], lambda: _train(recipe, shape, baseline, log))
    checkpoint = str(baseline) if recipe.train else recipe.checkpoint
    onnx_path = out / "model.onnx"
    results["export"] = stages.run("export", {"model": recipe.model, "shape": shape, "checkpoint": checkpoint,
                                              "normalize": recipe.normalize},
                                   [onnx_path], lambda: _export(recipe, shape, checkpoint, num_classes, onnx_path, out))
    store = out / "latency.sqlite"
    results["profile"] = stages.run("profile", recipe.profile.model_dump(), [store, out / "table.json"],
                                    lambda: _profile(onnx_path, store, config, out / "table.json", progress))
    pruned = out / "pruned"
    results["prune"] = stages.run("prune", recipe.prune.model_dump() | {"normalize": recipe.normalize}, [pruned / "model.onnx"],
                                  lambda: _prune(recipe, onnx_path, pruned, store, config, shape, out, progress, log))
    _record_baseline(pruned / "summary.json", results["export"]["val"])
    if recipe.finetune:
        results["finetune"] = stages.run("finetune", recipe.finetune.model_dump() | {"normalize": recipe.normalize},
                                         [pruned / "train.json"],
                                         lambda: _finetune(recipe, pruned, log))
    if recipe.build:
        results["build"] = stages.run("build", recipe.build.model_dump() | {"normalize": recipe.normalize}, [out / "build"],
                                      lambda: _build(recipe, pruned, out / "build"))
    if recipe.report:
        results["report"] = stages.run("report", {"report": True}, [pruned / "report" / "report.md"],
                                       lambda: _report(pruned, out))
    return results


def _record_baseline(summary_path: Path, metrics: dict) -> None:
    """The unpruned model's accuracy, for the report's headline (idempotent)."""
    summary = json.loads(summary_path.read_text())
    if summary.get("baseline_top1") != metrics["top1"]:
        summary["baseline_top1"] = metrics["top1"]
        write_json(summary, summary_path)


def _epoch_logger(log, total: int):
    return lambda epoch, record: log(f"  epoch {epoch + 1}/{total}: train loss {record['train_loss']:.3f}, "
                                     f"val top-1 {record.get('val_top1', float('nan')):.2f}")


def _train(recipe: Recipe, shape, baseline: Path, log) -> dict:
    from toolchain.baseline import train_baseline
    from toolchain.train import TrainConfig

    t = recipe.train
    config = TrainConfig(epochs=t.epochs, lr=t.lr, batch_size=t.batch_size, weight_decay=t.weight_decay, seed=recipe.seed)
    result = train_baseline(recipe.model, recipe.data, str(baseline), config, shape, on_epoch=_epoch_logger(log, t.epochs),
                            normalize=recipe.normalize)
    return {"val": result["val"], "history": result["history"]}


def _export(recipe: Recipe, shape, checkpoint, num_classes, onnx_path: Path, out: Path) -> dict:
    from toolchain.data import make_loader
    from toolchain.export import export_spec
    from toolchain.torch_source import torch_module_for
    from toolchain.train import evaluate

    model = export_spec(recipe.model, str(onnx_path), input_shape=shape, checkpoint=checkpoint, num_classes=num_classes)
    module, _ = torch_module_for(model)
    metrics = evaluate(module, make_loader(recipe.data, shape, "val", 256, seed=recipe.seed, normalize=recipe.normalize))
    # The unpruned model as a run of its own: the reference point of the accuracy/latency plot.
    (out / "baseline").mkdir(exist_ok=True)
    from graphs.stats import count_macs, count_params

    write_json({"spec": recipe.model, "params": {"before": count_params(model), "after": count_params(model)},
                "macs": {"before": count_macs(model), "after": count_macs(model)}, "groups": [], "removed": [],
                "latency": {"budget": 1.0, "measured": 1.0, "predicted": 1.0}}, out / "baseline" / "summary.json")
    write_json({"data": recipe.data, "before": metrics, "after": metrics, "history": []}, out / "baseline" / "train.json")
    return {"onnx": str(onnx_path), "val": metrics}


def _profile_config(recipe: Recipe):
    from toolchain.latency.config import ProfileConfig

    p = recipe.profile
    return ProfileConfig(backend=p.backend, provider=p.provider, precision=p.precision, batch=p.batch,
                         round_to=p.round_to, points=p.points, runs=p.runs)


def _profile(onnx_path: Path, store: Path, config, table_json: Path, progress) -> dict:
    from toolchain.latency.backends import get_backend
    from toolchain.latency.lut import profile

    table = profile(str(onnx_path), str(store), config, progress=progress)
    device = get_backend(config.backend, **config.backend_options()).device()
    data = {"base_ms": table.base_ms, "backend": config.backend, "device": device["device"],
            "groups": {g: {str(k): r for k, r in sorted(v.items())} for g, v in table.groups.items()},
            "widths": table.widths, "blocks": table.blocks}
    write_json(data, table_json)
    control = table.control  # this session's check of the reference (toolchain/latency/control.py)
    return {"base_ms": table.base_ms, "entries": sum(len(v) for v in table.groups.values()) + len(table.blocks),
            "control": None if control is None else {**control.as_dict(), "warning": control.warning()}}


def _prune(recipe: Recipe, onnx_path: Path, pruned: Path, store: Path, config, shape, out: Path, progress, log) -> dict:
    import shutil

    from toolchain.finetune import finetune_between_stages
    from toolchain.refine import BudgetRequest, prune_to_budget
    from toolchain.criteria import layer_scores
    from toolchain.data import make_loader
    from toolchain.torch_source import torch_module_for

    p = recipe.prune
    loader = make_loader(recipe.data, shape, "train", 32, seed=recipe.seed, shuffle=False,  # same batches every time
                         normalize=recipe.normalize)
    request = BudgetRequest(budget=p.budget, mode=p.mode, criterion=p.criterion, layer_criterion=p.layer_criterion,
                            solver=p.solver, round_to=recipe.profile.round_to, stages=p.stages, loader=loader, log=log,
                            max_prune=p.max_prune_ratio, max_prune_for=p.max_prune_ratio_for, confirm=p.confirm,
                            bn_batches=p.bn_batches,
                            # as `prune --stages K --data`: the model recovers for an epoch before the next stage
                            between_stages=finetune_between_stages(recipe.data, log=log, normalize=recipe.normalize)
                            if p.stages > 1 else None)
    if p.mode == "auto":  # each mode to the budget, the best on the held-out split kept (toolchain/refine_modes.py)
        from toolchain.refine_modes import held_out, prune_best_mode

        val = make_loader(recipe.data, shape, "val", 256, seed=recipe.seed, normalize=recipe.normalize).dataset
        tune = make_loader(recipe.data, shape, "train", 64, seed=recipe.seed, augment=True, normalize=recipe.normalize)
        summary = prune_best_mode(str(onnx_path), str(pruned), request, str(store), config, held_out(val), progress,
                                  tune_loader=tune, tune_batches=p.auto_tune_batches)
    else:
        summary = prune_to_budget(str(onnx_path), str(pruned), request, str(store), config, progress=progress)
    model = load_model(onnx_path)
    analysis = analyze(model)
    blocks = analysis.blocks
    module, _ = torch_module_for(model)
    scores = {name: layer_scores(name, module, analysis, blocks, loader=loader) for name in p.scores}
    write_json({"criteria": scores, "blocks": [b.id for b in blocks]}, pruned / "scores.json")
    shutil.copy(out / "table.json", pruned / "table.json")
    return {"latency": {k: v for k, v in summary["latency"].items() if k != "history"}, "params": summary["params"],
            "batchnorm": summary.get("batchnorm"), "mode_choice": summary.get("mode_choice")}


def _finetune(recipe: Recipe, pruned: Path, log) -> dict:
    from toolchain.finetune import finetune_dir
    from toolchain.train import TrainConfig

    f = recipe.finetune
    config = TrainConfig(epochs=f.epochs, lr=f.lr, batch_size=f.batch_size, weight_decay=f.weight_decay, seed=recipe.seed)
    result = finetune_dir(pruned, recipe.data, config, distill=f.distill, on_epoch=_epoch_logger(log, f.epochs),
                          normalize=recipe.normalize)
    return {"before": result["before"], "after": result["after"]}


def _build(recipe: Recipe, pruned: Path, target: Path) -> dict:
    from toolchain.build import build

    b = recipe.build
    return build(str(pruned), b.backend, b.precision, str(target), calib=recipe.data, max_drop=b.max_drop,
                 normalize=recipe.normalize)


def _report(pruned: Path, out: Path) -> dict:
    from toolchain.report import write_report

    return write_report(str(pruned), results=str(out))
