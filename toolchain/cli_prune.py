"""`compress prune`: to a Plan, a uniform ratio, or a measured latency budget (one mode, or each mode with
`--mode auto`), and what it prints."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from graphs.errors import InputError
from toolchain.cli_app import DATA_FORMS, RECHECK_HELP, Normalize, OnnxFile, TableProgress, command, err, out, print_json
from toolchain.recipe import AUTO_TUNE_BATCHES


@command
def prune(
    model: OnnxFile,
    output: Path = typer.Option(..., "-o", "--output", help="output directory"),
    plan: Optional[Path] = typer.Option(None, help="a Plan JSON (channels to keep, blocks to remove)"),
    ratio: Optional[float] = typer.Option(None, help="remove this fraction of every prunable group's channels (L1 norm)"),
    budget: Optional[float] = typer.Option(None, help="target latency as a fraction of the unpruned model's"),
    round_to: Optional[int] = typer.Option(None, "--round-to", help="keep channel counts multiples of N; default with --budget: the backend's channel block (16 for ORT on an AVX-512 CPU, 8 on AVX2 and TensorRT FP16, 32 for INT8), else 1"),
    spec: Optional[str] = typer.Option(None, help="torch model spec, if the ONNX does not record one"),
    seed: int = typer.Option(0, help="seed for layers re-created after a layer removal"),
    criterion: str = typer.Option("sp-lamp", help="filter importance with --budget: l1, l2, taylor, taylor-fm, bn-gamma, halp, sp-lamp, lamp, taylor-lamp, random. Which prices joint best depends on the model (Fashion-MNIST: taylor on ResNet-20, sp-lamp on Lite0, whose head taylor removes): --mode auto tries joint with both"),
    mode: str = typer.Option("joint", help="with --budget: filter (widths), layer (blocks), joint (both), or auto: joint (with --criterion and with taylor), layer and filter each meet the budget, and the one whose pruned model scores best on --data's held-out split (BatchNorm statistics re-estimated, after a short fine-tune: --auto-tune-batches) is kept"),
    solver: str = typer.Option("group-knapsack", help="filter mode: group-knapsack (SP-LAMP) or halp (0-1 knapsack)"),
    layer_criterion: Optional[str] = typer.Option(None, help="layer mode: mean:<criterion> (default), imprinting, ensemble:a,b"),
    stages: int = typer.Option(1, help="prune in K stages of equal latency reduction (SP-LAMP 3.3)"),
    max_prune_ratio: float = typer.Option(1.0, "--max-prune-ratio", help="with --budget, filter and joint modes: no channel group loses more than this fraction of its width (Torch-Pruning's max_pruning_ratio; 0.75 keeps at least a quarter of every layer). Default 1.0: down to one channel block; whole blocks may still be removed"),
    max_prune_ratio_for: list[str] = typer.Option([], "--max-prune-ratio-for", help="PATTERN=R, repeatable: channel groups whose id matches the glob PATTERN (the ids `compress analyze` lists) lose at most R of their width instead of --max-prune-ratio; R=0 keeps them whole (Torch-Pruning's pruning_ratio_dict). PATTERN may instead select by output stride (input side / the group's feature-map side, the stride column of `compress analyze`): 'stride<=4=0.5' keeps half of every group at 1/2 and 1/4 of the input's resolution, in any CNN (also <, >=, >, ==). Where patterns overlap the smallest R holds. Example: --max-prune-ratio-for 'conv_stem=0' --max-prune-ratio-for 'blocks.1.*=0.5'"),
    data: Optional[str] = typer.Option(None, help=f"data for data-dependent criteria: {DATA_FORMS}"),
    batches: int = typer.Option(8, help="batches of --data the criterion may use"),
    bn_batches: int = typer.Option(16, "--bn-batches", help="with --data: batches of it (32 images each) that re-estimate the pruned model's BatchNorm statistics, in its weights and model.onnx alike (0: keep the unpruned model's; pruned layers then see other statistics and the model scores near chance until fine-tuned)"),
    auto_tune_batches: Optional[int] = typer.Option(None, "--auto-tune-batches", help=f"with --mode auto: rank the modes' pruned models after a short fine-tune of each on N batches (64 images each) of --data's train split, the same images in the same order for every mode (NetAdapt's short-term fine-tune). Default {AUTO_TUNE_BATCHES}: ResNet-20 on Fashion-MNIST at 0.5, ranked before fine-tuning, kept shallow plans that fine-tuned 2 points below joint's; ranked after it, joint on 4 of 5 seeds. The model written is the untuned one. 0: rank on the score before fine-tuning (faster)"),
    normalize: Normalize = "auto",
    backend: str = typer.Option("ort", help="with --budget: the backend whose latency the budget is about (ort, tensorrt, torch)"),
    provider: Optional[str] = typer.Option(None, help="where the backend runs: ort cpu (default) | cuda | tensorrt (CUDA and TensorRT execution providers need pip install -e '.\\[gpu]'); torch cpu | cuda"),
    precision: str = typer.Option("fp32", help="with --budget: fp32 | fp16 | int8 engines/providers to time"),
    batch: int = typer.Option(1, help="with --budget: the batch size the budget is about (the table and every plan are timed at it)"),
    store: Path = typer.Option(Path("latency.sqlite"), help="with --budget: the latency store (see `compress profile`)"),
    runs: int = typer.Option(20, help="with --budget: interleaved pairs per table entry"),
    confirm: int = typer.Option(1, "--confirm", help="with --budget: fresh measurements of the kept plan, which decide whether it meets the budget and are the figure reported (0: none). It was kept for measuring well among several plans, so its own figure is biased low; one whose fresh figure misses gives way to the next"),
    table: str = typer.Option("reduced", "--table", help="with --budget: what to measure: full (every group at --points widths, every block, the anchors); reduced (the 4 anchors, then the entries the per-layer model is least sure of, one at a time, until the predicted error of mixed plans is <= --target-error or --max-measurements is reached; about a quarter of full; the default: the budget is met by measuring the pruned model, the table only guides the solver); prior (the anchors only: the rest is predicted from the device profile that every table measured on this device/backend adds to)"),
    max_measurements: Optional[int] = typer.Option(None, "--max-measurements", help="with --table reduced|prior: measure at most N entries of this model, anchors included (default: a quarter of the full grid)"),
    target_error: float = typer.Option(0.05, "--target-error", help="with --table reduced: stop when the predicted relative error of mixed plans (2 standard deviations, 90th percentile) is <= E"),
    recheck_after: float = typer.Option(6.0, "--recheck-after", help="with --budget: " + RECHECK_HELP),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Prune to a Plan, a uniform ratio or a measured latency budget.

    Writes DIR/model.onnx, DIR/plan.json, DIR/weights.safetensors (synced torch weights) and DIR/summary.json.

    --budget B asks for a measured latency <= B x the unpruned model's on --backend: missing table
    entries are profiled, the solver picks widths and/or blocks, the pruned model is measured. The budget
    is a ceiling: met when the measured ratio is <= B + one standard error of that measurement; a plan
    that misses it is re-solved tighter, and the least-pruned plan that meets it is kept. With --stages K
    and --data, the model is fine-tuned for an epoch between stages."""
    from toolchain.latency.config import recheck_seconds

    per_group = _parse_max_prune_for(max_prune_ratio_for)
    _check_prune_request(plan, ratio, budget, round_to, max_prune_ratio, per_group, bn_batches, mode, auto_tune_batches)
    if budget is not None:
        table_mode = dict(table=table, max_measurements=max_measurements, target_error=target_error,
                          recheck_after_s=recheck_seconds(recheck_after), batch=batch)
        summary = _prune_budget(model, output, budget, criterion, mode, solver, layer_criterion, stages, data,
                                batches, backend, store, runs, round_to, provider, precision, table_mode, normalize,
                                max_prune_ratio, per_group, confirm, bn_batches,
                                AUTO_TUNE_BATCHES if auto_tune_batches is None else auto_tune_batches)
        return print_json(summary) if as_json else _print_budget_summary(summary, output)
    loader = _data_loader(model, data, normalize) if data is not None and bn_batches > 0 else None  # refused first
    summary = _prune_to_plan(model, output, plan, ratio, round_to, spec, seed, loader, bn_batches)
    return print_json(summary) if as_json else _print_prune_summary(summary, output)


def _prune_to_plan(model, output, plan, ratio, round_to, spec, seed, loader=None, bn_batches: int = 0) -> dict:
    """`prune --plan P` or `--ratio R` (a uniform L1 plan): no table, no measurement; with a loader (--data),
    the pruned model's BatchNorm statistics re-estimated on `bn_batches` of its batches."""
    from graphs.deps import analyze
    from graphs.onnx_io import load_model
    from graphs.plan import load_plan
    from toolchain.prune import prune_to_dir, uniform_plan

    if plan is not None:
        the_plan = load_plan(plan)
        if round_to is not None and round_to > 1:
            the_plan.round_to = round_to
    analysis = analyze(load_model(model))  # once: the uniform plan and the pruning share it
    if plan is None:
        the_plan = uniform_plan(analysis, ratio, round_to or 1)
    with err.status("pruning..."):
        summary = prune_to_dir(str(model), str(output), the_plan, spec=spec, seed=seed, analysis=analysis)
    if loader is not None:
        from toolchain.batchnorm import recalibrate_pruned_dir

        with err.status("re-estimating BatchNorm statistics..."):
            summary["batchnorm"] = recalibrate_pruned_dir(output, loader, bn_batches)
    return summary


def _parse_max_prune_for(items: list[str]) -> dict[str, float]:
    """'PATTERN=R' strings -> {pattern: R}."""
    per_group = {}
    for item in items:
        pattern, _, value = item.rpartition("=")
        try:
            per_group[pattern] = float(value)
        except ValueError:
            raise InputError(f"--max-prune-ratio-for {item!r}: expected PATTERN=R, e.g. 'blocks.1.*=0.5'") from None
    from toolchain.solve.width_floor import check_max_prune_for

    check_max_prune_for(per_group)
    return per_group


def _check_prune_request(plan, ratio, budget, round_to, max_prune_ratio, per_group, bn_batches: int = 0,
                         mode: str = "joint", auto_tune_batches: int | None = None) -> None:
    chosen = [name for name, value in (("--plan", plan), ("--ratio", ratio), ("--budget", budget)) if value is not None]
    if len(chosen) != 1:
        raise InputError("give exactly one of --plan, --ratio or --budget")
    if round_to is not None and round_to < 1:
        raise InputError(f"--round-to must be >= 1, got {round_to}")
    if bn_batches < 0:
        raise InputError(f"--bn-batches must be >= 0, got {bn_batches}")
    if auto_tune_batches is not None and (mode != "auto" or auto_tune_batches < 0):
        raise InputError(f"--auto-tune-batches must be >= 0 and applies to --mode auto, got {auto_tune_batches} "
                         f"with --mode {mode}")
    for name, given in (("--max-prune-ratio", max_prune_ratio != 1.0), ("--max-prune-ratio-for", bool(per_group))):
        if given and budget is None:
            raise InputError(f"{name} bounds the budget solver: it needs --budget (a --ratio is already uniform)")


def _print_budget_summary(summary: dict, output: Path) -> None:
    lat = summary["latency"]
    status = "[green]met[/green]" if lat["met"] else "[red]missed[/red]"
    fresh = lat.get("confirmed", 0)
    how = f" over {fresh} fresh measurement{'s' if fresh > 1 else ''} of the kept plan" if fresh else ""
    out.print(f"wrote {output}/: budget {lat['budget']:.3f}, predicted {lat['predicted']:.3f}, measured "
              f"{lat['measured']:.3f} +- {lat.get('measured_se', 0.0):.3f} (one standard error){how} of the unpruned "
              f"latency ({lat['pruned_ms']:.2f} ms vs {lat['reference_ms']:.2f} ms) {status} (met: <= budget + one "
              "standard error)")
    _print_batchnorm(summary)
    choice = summary.get("mode_choice")
    for c in (choice or {}).get("candidates", []):
        mark = " <- kept" if c["mode"] == choice["chosen"] else ""
        out.print(f"  mode {c['mode']}: " + (f"refused ({c['refused']})" if "refused" in c else
                  f"measured {c['measured']:.3f} ({'met' if c['met'] else 'missed'}), held-out top-1 {c['val_top1']:.2f}"
                  + (f", {c['tuned_top1']:.2f} after the short fine-tune" if "tuned_top1" in c else "") + mark),
                  highlight=False, markup=False)


def _print_batchnorm(summary: dict) -> None:
    record = summary.get("batchnorm") or {}
    if record.get("recalibrated"):
        out.print(f"BatchNorm statistics re-estimated on {record['images']:,} training images ({record['norms']} norms)")
    elif record.get("why") not in (None, "no data given", "switched off (0 batches)"):
        err.print(f"[yellow]note:[/yellow] BatchNorm statistics kept as unpruned: {record['why']}", highlight=False)


def _print_prune_summary(summary: dict, output: Path) -> None:
    p, m = summary["params"], summary["macs"]
    out.print(f"wrote {output}/: params {p['before']:,} -> {p['after']:,} ({p['after'] / p['before']:.1%}), "
              f"MACs {m['before']:,} -> {m['after']:,} ({m['after'] / max(1, m['before']):.1%}), "
              f"{len(summary['removed'])} blocks removed")
    _print_batchnorm(summary)
    for note in summary["notes"]:
        err.print(f"[yellow]note:[/yellow] {note}", highlight=False)


def _prune_budget(model, output, budget, criterion, mode, solver, layer_criterion, stages, data, batches, backend,
                  store, runs, round_to, provider=None, precision="fp32", table_mode: dict | None = None,
                  normalize: str = "auto", max_prune_ratio: float = 1.0, max_prune_for: dict | None = None,
                  confirm: int = 1, bn_batches: int = 16, auto_tune_batches: int = 0) -> dict:
    from graphs.onnx_io import load_model
    from toolchain.latency.config import ProfileConfig, check_table_mode
    from toolchain.finetune import finetune_between_stages
    from toolchain.refine import BudgetRequest, prune_to_budget
    from toolchain.data_transforms import check_normalize
    from toolchain.solve.budget import check_budget
    from toolchain.solve.width_floor import check_max_prune

    check_budget(budget)  # before --data is loaded
    check_max_prune(max_prune_ratio)
    check_normalize(normalize)
    config = ProfileConfig(backend=backend, round_to=round_to, runs=runs, provider=provider, precision=precision,
                           **(table_mode or {}))
    check_table_mode(config)
    loader = _data_loader(model, data, normalize) if data is not None else None
    log = lambda message: err.print(message, highlight=False, markup=False)  # noqa: E731
    # Between stages the pruned model recovers for an epoch on --data before the next stage scores it.
    hook = finetune_between_stages(data, log=log, normalize=normalize) if stages > 1 and data is not None else None
    request = BudgetRequest(budget=budget, mode=mode, criterion=criterion, layer_criterion=layer_criterion,
                            solver=solver, round_to=round_to, stages=stages, loader=loader, batches=batches,
                            between_stages=hook, log=log, max_prune=max_prune_ratio, max_prune_for=max_prune_for or {},
                            confirm=confirm, bn_batches=bn_batches)
    progress = TableProgress()
    try:
        if mode == "auto":
            from toolchain.refine_modes import held_out, prune_best_mode

            scores = held_out(_data_loader(model, data, normalize, "val").dataset) if data is not None else None
            tune = _data_loader(model, data, normalize, augment=True) if data is not None and auto_tune_batches else None
            return prune_best_mode(str(model), str(output), request, str(store), config, scores, progress=progress,
                                   tune_loader=tune, tune_batches=auto_tune_batches)
        return prune_to_budget(str(model), str(output), request, str(store), config, progress=progress)
    finally:
        progress.stop()


def _data_loader(model: Path, data: str, normalize: str, split: str = "train", augment: bool = False):
    """One split of --data (train by default) in a fixed order (repeatable scores and statistics), 32 images a
    batch; with `augment`, the train-time transform and 64 a batch (a short fine-tune's data)."""
    from graphs.onnx_io import load_model, require_input_shape
    from toolchain.data import make_loader

    shape = require_input_shape(load_model(model), str(model))
    return make_loader(data, tuple(shape), split, batch_size=64 if augment else 32, seed=0, shuffle=False,
                       normalize=normalize, augment=augment)
