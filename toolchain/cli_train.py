"""`compress finetune`, `train`, `pipeline` and `build`: the commands that train or ship a model."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from graphs.errors import InputError
from toolchain.cli_app import DATA_FORMS, EpochProgress, Normalize, PrunedDir, TableProgress, command, err, out, parse_shape, print_json, train_config


@command
def finetune(
    directory: PrunedDir,
    data: str = typer.Option(..., help=f"{DATA_FORMS}; with --distill-only, imagefolder:PATH may hold the images directly"),
    epochs: int = typer.Option(5, help="epochs (the papers fine-tune for 30 at lr 1e-3)"),
    lr: float = typer.Option(1e-3, help="SGD learning rate, decayed x0.1 at 1/2 and 3/4 of the run"),
    batch_size: int = typer.Option(64, "--batch-size"),
    weight_decay: float = typer.Option(5e-4, "--weight-decay"),
    distill: bool = typer.Option(False, help="distil from the unpruned model (soft targets)"),
    distill_only: bool = typer.Option(False, "--distill-only", help="no labels: learn the unpruned model's outputs "
                                      "on unlabeled images (detection, segmentation, any output structure)"),
    seed: int = typer.Option(0),
    normalize: Normalize = "auto",
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Fine-tune a pruned model in torch and write the weights back into DIR.

    The weights go into weights.safetensors and, by name, into the same initializers of DIR/model.onnx
    (parity checked). An interrupted run resumes from DIR/finetune/.

    --distill-only needs no labels and no task code (YOLO, segmentation, detection): the pruned model
    learns to reproduce the unpruned model's outputs (the ONNX DIR was pruned from), every output
    tensor alike, on your images, e.g. `compress finetune out/ --data imagefolder:frames/ --distill-only`
    with frames/*.jpg. Its score is that distance on a held-out 20% of the images (lower is better).

    A DIR pruned from an ONNX file with no torch source is trained through a torch module built from
    DIR/model.onnx by onnx2torch (`pip install -e .\\[onnx2torch]`)."""
    from toolchain.data import dataset_info
    from toolchain.data_transforms import check_normalize
    from toolchain.finetune import ParityLost, finetune_dir

    check_normalize(normalize)

    if not (directory / "plan.json").is_file():
        raise InputError(f"{directory}: no plan.json (is it a `compress prune` output directory?)")
    config = train_config(epochs, lr, batch_size, weight_decay, seed)
    per_epoch = dataset_info(data, seed=seed, unlabeled=distill_only)["splits"]["train"]
    progress = EpochProgress(epochs, per_epoch)
    try:
        result = finetune_dir(directory, data, config, distill=distill, progress=progress, distill_only=distill_only,
                              normalize=normalize)
    except (ParityLost, FloatingPointError) as exc:  # a failed check or a diverged run: nothing written
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1)
    finally:
        progress.stop()
    if as_json:
        print_json(result)
        return
    b, a = result["before"], result["after"]
    if distill_only:
        out.print(f"distance to the unpruned model {b['distance']:.4g} -> {a['distance']:.4g} on {data} val; "
                  f"weights written to {directory}/weights.safetensors and model.onnx")
        return
    out.print(f"top-1 {b['top1']:.2f} -> {a['top1']:.2f} (top-5 {a['top5']:.2f}) on {data} val; "
              f"weights written to {directory}/weights.safetensors and model.onnx")


@command
def train(
    spec: str = typer.Argument(..., help="model spec, e.g. builtin:resnet20"),
    data: str = typer.Option(..., help=f"training data: {DATA_FORMS}"),
    output: Path = typer.Option(..., "-o", "--output", help="weights file to write (.safetensors)"),
    epochs: int = typer.Option(10),
    lr: float = typer.Option(0.05, help="from scratch: SGD lr, decayed x0.1 at 1/2 and 3/4 of the run"),
    batch_size: int = typer.Option(64, "--batch-size"),
    weight_decay: float = typer.Option(5e-4, "--weight-decay"),
    input_shape: Optional[str] = typer.Option(None, help="N,C,H,W (default: the spec's)"),
    seed: int = typer.Option(0),
    normalize: Normalize = "auto",
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Train a model from scratch (the baseline to prune), e.g. builtin:resnet20 on mnist5k."""
    from toolchain.baseline import train_baseline
    from toolchain.data_transforms import check_normalize

    check_normalize(normalize)

    config = train_config(epochs, lr, batch_size, weight_decay, seed)
    result = train_baseline(spec, data, str(output), config, parse_shape(input_shape), normalize=normalize)
    if as_json:
        print_json(result)
        return
    out.print(f"wrote {output}: top-1 {result['val']['top1']:.2f} on {data} val after {epochs} epochs")


@command
def pipeline(
    recipe: Path = typer.Argument(..., help="recipe YAML (see recipes/default.yaml)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Run export -> profile -> prune -> finetune -> (build) -> report from one recipe.

    Finished stages whose settings (and upstream stages) did not change are skipped on a re-run."""
    from toolchain.pipeline import run_pipeline
    from toolchain.recipe import load_recipe

    config = load_recipe(recipe)
    progress = TableProgress()
    try:
        results = run_pipeline(config, log=lambda message: err.print(message, highlight=False, markup=False),
                               progress=progress)
    finally:
        progress.stop()
    if as_json:
        print_json(results)
        return
    lines = [f"pipeline {config.name}: outputs in {config.out}/"]
    if "export" in results:
        lines.append(f"  unpruned top-1 {results['export']['val']['top1']:.2f}")
    if "prune" in results:
        from toolchain.report import latency_target  # matplotlib: only once a pipeline has run
        lat = results["prune"]["latency"]
        lines.append(f"  latency budget {lat['budget']:.2f}: predicted {lat['predicted']:.3f}, measured {lat['measured']:.3f} "
                     f"of the unpruned model ({lat['pruned_ms']:.2f} ms vs {lat['reference_ms']:.2f} ms; "
                     f"{latency_target(lat)})")
    if "finetune" in results:
        f = results["finetune"]
        lines.append(f"  pruned top-1 {f['before']['top1']:.2f} -> {f['after']['top1']:.2f} after fine-tuning")
    if "report" in results:
        lines.append(f"  report: {config.out}/pruned/report/report.md")
    out.print("\n".join(lines))


@command
def build_command(
    source: Path = typer.Argument(..., help="a `compress prune` output directory, or an ONNX file"),
    output: Path = typer.Option(..., "-o", "--output", help="artifact to write (a manifest JSON is written beside it)"),
    backend: str = typer.Option("ort", help="ort (optimised ONNX for onnxruntime) or tensorrt (serialized engine, built here through Polygraphy)"),
    provider: Optional[str] = typer.Option(None, help="where the artifact is checked and timed: ort cpu (default) | cuda | tensorrt (need pip install -e '.\\[gpu]')"),
    precision: str = typer.Option("fp32", help="fp32 | fp16 | int8 (int8 needs --calib)"),
    calib: Optional[str] = typer.Option(None, help=f"calibration data: {DATA_FORMS}, or a .npy/.npz file or image folder"),
    calib_method: str = typer.Option("minmax", "--calib-method", help="minmax | entropy | percentile"),
    batch: str = typer.Option("1:1:1", help="dynamic batch profile MIN:OPT:MAX (TensorRT)"),
    val: Optional[str] = typer.Option(None, help="validation data for the accuracy check (default: --calib's val split)"),
    max_drop: Optional[float] = typer.Option(None, "--max-drop", help="fail (exit 1) when top-1 drops more than this many points"),
    workspace_mb: int = typer.Option(1024, "--workspace-mb", help="TensorRT builder workspace limit"),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="TensorRT timing cache file (reused)"),
    normalize: Normalize = "auto",
    as_json: bool = typer.Option(False, "--json", help="print the manifest as JSON"),
) -> None:
    """Build the deployable artifact (ORT model or TensorRT engine) with its manifest.

    ORT: optimised, FP16 or INT8 (QDQ) ONNX. TensorRT: an engine built on this machine (TensorRT 10
    flags or 11 strongly typed). The manifest records versions, device, hashes, the calibration digest,
    the latency measured here and the accuracy check against FP32."""
    from toolchain.build import BuildCheckFailed
    from toolchain.build import build

    try:
        with err.status(f"building {precision} for {backend}..."):
            manifest = build(str(source), backend, precision, str(output), calib=calib, batch=batch,
                                      calib_method=calib_method, max_drop=max_drop, val=val, workspace_mb=workspace_mb,
                                      provider=provider, normalize=normalize,
                                      timing_cache=str(timing_cache) if timing_cache else None)
    except BuildCheckFailed as exc:
        err.print(f"[red]build check failed:[/red] {exc}", highlight=False)
        raise typer.Exit(1)
    if as_json:
        print_json(manifest)
        return
    out.print(f"wrote {output} ({backend} {precision}); manifest beside it")
    acc = manifest.get("accuracy") or {}
    if acc:
        out.print(f"  accuracy check: {json.dumps(acc)[:300]}")
    if manifest.get("latency"):
        out.print(f"  latency on this machine: {json.dumps(manifest['latency'])[:300]}")

