"""The `compress` command line: parse, call the library, render. No pruning logic lives here.

Exit codes (DESIGN.md): 0 success, 1 the check a command ran failed, 2 bad input (one line on
stderr, no traceback unless --debug).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from graphs.errors import InputError
from toolchain.cli_app import DATA_FORMS, RECHECK_HELP, Normalize, OnnxFile, PrunedDir, TableProgress, app, command, err, out, parse_shape, print_json


@command
def export(
    spec: str = typer.Argument(..., help="torchvision:NAME, timm:NAME, builtin:NAME (resnet20, resnet56, vgg19_bn) or path/to/file.py:factory"),
    output: Path = typer.Option(..., "-o", "--output", help="ONNX file to write"),
    input_shape: Optional[str] = typer.Option(None, help="N,C,H,W (default: 1,3,224,224; 1,3,32,32 for builtin)"),
    checkpoint: Optional[Path] = typer.Option(None, help="state dict to load: .safetensors, or a torch file loaded with weights_only=True"),
) -> None:
    """Export a PyTorch model to ONNX, keeping BatchNorm and torch parameter names and values."""
    from toolchain.export import export_spec

    model = export_spec(spec, str(output), input_shape=parse_shape(input_shape),
                        checkpoint=str(checkpoint) if checkpoint else None)
    out.print(f"wrote {output} ({len(model.graph.node)} nodes, {len(model.graph.initializer)} initializers)")


@command
def analyze_command(
    model: OnnxFile,
    as_json: bool = typer.Option(False, "--json", help="print the analysis as JSON"),
) -> None:
    """Show the channel dependency groups (what can be pruned, and why not) and the removable blocks."""
    from graphs.deps import analyze
    from graphs.onnx_io import load_model
    from graphs.resolution import group_strides

    analysis = analyze(load_model(model))
    blocks, strides = analysis.blocks, group_strides(analysis)
    if as_json:
        print_json({"groups": [g.as_dict() | {"stride": strides.get(g.id)} for g in analysis.groups],
                    "blocks": [b.as_dict() for b in blocks], "not_removable": [n.as_dict() for n in analysis.not_removable]})
        return
    table = Table(title=f"Channel groups of {model.name}")
    for col in ("group", "channels", "stride", "prunable", "members / reason"):
        table.add_column(col)
    for g in analysis.groups:
        detail = ", ".join(g.members[:4]) + (f" (+{len(g.members) - 4})" if len(g.members) > 4 else "")
        table.add_row(g.id, str(g.channels) + (f" x{g.multiplicity}" if g.multiplicity > 1 else ""),
                      str(strides.get(g.id, "")), "[green]yes[/green]" if g.prunable else "[red]no[/red]",
                      detail if g.prunable else g.reason)
    out.print(table)
    btable = Table(title="Removable blocks and layers")
    for col in ("block", "kind", "width in -> out", "members"):
        btable.add_column(col)
    for b in blocks:
        reinit = f" (re-creates {b.as_dict()['reinit']})" if b.as_dict()["reinit"] else ""
        btable.add_row(b.id, b.kind, f"{b.width_in} -> {b.width_out}", ", ".join(b.members) + reinit)
    out.print(btable)
    if analysis.not_removable:
        ntable = Table(title="Block-shaped modules that are not removable")
        for col in ("module", "why not"):
            ntable.add_column(col)
        for n in analysis.not_removable:
            ntable.add_row(n.id, n.reason)
        out.print(ntable)
    prunable = sum(g.prunable for g in analysis.groups)
    out.print(f"{len(analysis.groups)} groups, {prunable} prunable, "
              f"{sum(g.channels for g in analysis.groups if g.prunable)} prunable channels; {len(blocks)} removable blocks")


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
    criterion: str = typer.Option("sp-lamp", help="filter importance with --budget: l1, l2, taylor, taylor-fm, bn-gamma, halp, sp-lamp, lamp, taylor-lamp, random"),
    mode: str = typer.Option("joint", help="with --budget: filter (widths), layer (blocks), joint (both)"),
    solver: str = typer.Option("group-knapsack", help="filter mode: group-knapsack (SP-LAMP) or halp (0-1 knapsack)"),
    layer_criterion: Optional[str] = typer.Option(None, help="layer mode: mean:<criterion> (default), imprinting, ensemble:a,b"),
    stages: int = typer.Option(1, help="prune in K stages of equal latency reduction (SP-LAMP 3.3)"),
    max_prune_ratio: float = typer.Option(1.0, "--max-prune-ratio", help="with --budget, filter and joint modes: no channel group loses more than this fraction of its width (Torch-Pruning's max_pruning_ratio; 0.75 keeps at least a quarter of every layer). Default 1.0: down to one channel block; whole blocks may still be removed"),
    max_prune_ratio_for: list[str] = typer.Option([], "--max-prune-ratio-for", help="PATTERN=R, repeatable: channel groups whose id matches the glob PATTERN (the ids `compress analyze` lists) lose at most R of their width instead of --max-prune-ratio; R=0 keeps them whole (Torch-Pruning's pruning_ratio_dict). PATTERN may instead select by output stride (input side / the group's feature-map side, the stride column of `compress analyze`): 'stride<=4=0.5' keeps half of every group at 1/2 and 1/4 of the input's resolution, in any CNN (also <, >=, >, ==). Where patterns overlap the smallest R holds. Example: --max-prune-ratio-for 'conv_stem=0' --max-prune-ratio-for 'blocks.1.*=0.5'"),
    data: Optional[str] = typer.Option(None, help=f"data for data-dependent criteria: {DATA_FORMS}"),
    batches: int = typer.Option(8, help="batches of --data the criterion may use"),
    bn_batches: int = typer.Option(16, "--bn-batches", help="with --data: batches of it (32 images each) that re-estimate the pruned model's BatchNorm statistics, in its weights and model.onnx alike (0: keep the unpruned model's; pruned layers then see other statistics and the model scores near chance until fine-tuned)"),
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
    _check_prune_request(plan, ratio, budget, round_to, max_prune_ratio, per_group, bn_batches)
    if budget is not None:
        table_mode = dict(table=table, max_measurements=max_measurements, target_error=target_error,
                          recheck_after_s=recheck_seconds(recheck_after), batch=batch)
        summary = _prune_budget(model, output, budget, criterion, mode, solver, layer_criterion, stages, data,
                                batches, backend, store, runs, round_to, provider, precision, table_mode, normalize,
                                max_prune_ratio, per_group, confirm, bn_batches)
        return print_json(summary) if as_json else _print_budget_summary(summary, output)
    loader = _train_loader(model, data, normalize) if data is not None and bn_batches > 0 else None  # refused first
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


def _check_prune_request(plan, ratio, budget, round_to, max_prune_ratio, per_group, bn_batches: int = 0) -> None:
    chosen = [name for name, value in (("--plan", plan), ("--ratio", ratio), ("--budget", budget)) if value is not None]
    if len(chosen) != 1:
        raise InputError("give exactly one of --plan, --ratio or --budget")
    if round_to is not None and round_to < 1:
        raise InputError(f"--round-to must be >= 1, got {round_to}")
    if bn_batches < 0:
        raise InputError(f"--bn-batches must be >= 0, got {bn_batches}")
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
                  confirm: int = 1, bn_batches: int = 16) -> dict:
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
    loader = _train_loader(model, data, normalize) if data is not None else None
    log = lambda message: err.print(message, highlight=False, markup=False)  # noqa: E731
    # Between stages the pruned model recovers for an epoch on --data before the next stage scores it.
    hook = finetune_between_stages(data, log=log, normalize=normalize) if stages > 1 and data is not None else None
    request = BudgetRequest(budget=budget, mode=mode, criterion=criterion, layer_criterion=layer_criterion,
                            solver=solver, round_to=round_to, stages=stages, loader=loader, batches=batches,
                            between_stages=hook, log=log, max_prune=max_prune_ratio, max_prune_for=max_prune_for or {},
                            confirm=confirm, bn_batches=bn_batches)
    progress = TableProgress()
    try:
        return prune_to_budget(str(model), str(output), request, str(store), config, progress=progress)
    finally:
        progress.stop()


def _train_loader(model: Path, data: str, normalize: str):
    """--data's train split in a fixed order (repeatable scores and statistics), 32 images a batch."""
    from graphs.onnx_io import load_model, require_input_shape
    from toolchain.data import make_loader

    shape = require_input_shape(load_model(model), str(model))
    return make_loader(data, tuple(shape), "train", batch_size=32, seed=0, shuffle=False, normalize=normalize)


@command
def report(
    directory: PrunedDir,
    results: Optional[Path] = typer.Option(None, help="a folder of run directories for the accuracy-vs-latency plot"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="report folder (default DIR/report)"),
) -> None:
    """Write DIR/report/report.md and report.html with PNG figures and the numbers behind them."""
    from toolchain.report import write_report

    written = write_report(str(directory), results=str(results) if results else None, out=str(output) if output else None)
    out.print(f"wrote {written.get('markdown', written)}")


@command
def verify(
    directory: PrunedDir,
    batch: int = typer.Option(2, help="verification batch size"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Check that the synced torch module and DIR/model.onnx compute the same function (exit 1 if not)."""
    from toolchain.verify import verify_dir

    result = verify_dir(directory, batch=batch)
    if as_json:
        print_json(result.as_dict())
    else:
        p = result.parity
        status = "[green]PASS[/green]" if p.ok else "[red]FAIL[/red]"
        note = " (BatchNorm statistics set from the verification input: the stored ones gave a degenerate scale)" \
            if result.recalibrated else ""
        out.print(f"{status} max abs diff {p.max_diff:.3g}, output scale {p.scale:.3g}, tolerance {p.tolerance:.3g}{note}")
        if p.degenerate:
            err.print("[yellow]warning:[/yellow] the output scale is degenerate even after BatchNorm calibration; "
                      "the comparison says little", highlight=False)
    raise typer.Exit(0 if result.parity.ok else 1)


@command
def profile_command(
    model: OnnxFile,
    backend: str = typer.Option("ort", help="ort (onnxruntime, CPU by default), tensorrt, torch (the Plan applied to the torch module)"),
    provider: Optional[str] = typer.Option(None, help="where the backend runs: ort cpu (default) | cuda | tensorrt (CUDA and TensorRT execution providers need pip install -e '.\\[gpu]'); torch cpu | cuda"),
    store: Path = typer.Option(Path("latency.sqlite"), help="SQLite store of measurements (shared, resumable)"),
    batch: int = typer.Option(1, help="batch size to time"),
    precision: str = typer.Option("fp32", help="fp32 | fp16 | int8 (the backend must support it)"),
    round_to: Optional[int] = typer.Option(None, "--round-to", help="sample group widths on multiples of N (default: the backend's channel block, 16 for ORT on an AVX-512 CPU)"),
    points: int = typer.Option(3, help="widths sampled per group below full width"),
    runs: int = typer.Option(20, help="interleaved candidate/reference pairs per entry (extended while noisy)"),
    table: str = typer.Option("full", "--table", help="what to measure: full (every group at --points widths, every block, the anchors); reduced (the 4 anchors, then the entries the per-layer model is least sure of, one at a time, until the predicted error of mixed plans is <= --target-error or --max-measurements is reached; about a quarter of full); prior (the anchors only: the rest is predicted from the device profile that every table measured on this device/backend adds to)"),
    max_measurements: Optional[int] = typer.Option(None, "--max-measurements", help="with --table reduced|prior: measure at most N entries of this model, anchors included (default: a quarter of the full grid)"),
    target_error: float = typer.Option(0.05, "--target-error", help="with --table reduced: stop when the predicted relative error of mixed plans (2 standard deviations, 90th percentile) is <= E"),
    warmup: int = typer.Option(2, help="untimed pairs first"),
    pause: float = typer.Option(0.0, help="seconds to sleep after each call (see PLATFORM.md on spinning threads)"),
    blocks_only: bool = typer.Option(False, "--blocks-only", help="only the removable-block entries"),
    groups_only: bool = typer.Option(False, "--groups-only", help="only the group-width entries"),
    fresh: bool = typer.Option(False, help="drop this model's stored rows for this backend/precision/batch first"),
    recheck_after: float = typer.Option(6.0, "--recheck-after", help=RECHECK_HELP),
    ray: Optional[str] = typer.Option(None, "--ray", help="Ray address ('local' starts one) to spread measurements over"),
    ray_resource: Optional[str] = typer.Option(None, "--ray-resource", help="Ray resource naming the target device"),
    as_json: bool = typer.Option(False, "--json", help="print the table summary as JSON"),
) -> None:
    """Build latency tables on the real backend (resumable SQLite store).

    Whole-network latency with each group narrowed to k channels (coupled layers together, SP-LAMP
    eq. 7) and with each removable block gone, as ratios to the unpruned model timed interleaved with it.
    Profile on an otherwise idle machine: a timing during which other processes kept more than a quarter
    of the CPU busy is taken again after a pause, and if the load lasts, a warning names how many were."""
    from toolchain.latency.config import ProfileConfig, check_table_mode, recheck_seconds
    from toolchain.latency.lut import profile

    if blocks_only and groups_only:
        raise InputError("--blocks-only and --groups-only exclude each other")
    if precision not in ("fp32", "fp16", "int8"):
        raise InputError(f"unknown precision {precision!r}: fp32, fp16 or int8")
    if min(batch, points, runs, round_to or 1) < 1 or warmup < 0 or pause < 0:
        raise InputError("--batch, --points, --runs and --round-to must be >= 1; --warmup and --pause >= 0")
    config = ProfileConfig(backend=backend, precision=precision, batch=batch, round_to=round_to, points=points,
                           runs=runs, warmup=warmup, pause_s=pause, groups=not blocks_only, blocks=not groups_only,
                           provider=provider, table=table, max_measurements=max_measurements,
                           target_error=target_error, recheck_after_s=recheck_seconds(recheck_after))
    check_table_mode(config)
    progress = TableProgress()
    try:
        table = profile(str(model), str(store), config, progress=progress, fresh=fresh,
                            ray_address=ray, ray_resource=ray_resource)
    finally:
        progress.stop()
    for warning in (table.load_warning, table.drift_warning, table.control_warning):  # on stderr: --json output stays one document
        if warning:
            err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    if as_json:
        print_json(_table_summary(table, store, config))
        return
    _print_table(table, model, backend, config)


def _table_summary(table, store: Path, config) -> dict:
    return {"base_ms": table.base_ms, "store": str(store), "protocol": config.protocol,
            "groups": {g: {str(k): r for k, r in sorted(v.items())} for g, v in table.groups.items()},
            "blocks": table.blocks, "anchors": {name: a.ratio for name, a in table.anchors.items()},
            "table": config.table, "measured_entries": table.measured,
            "estimated_groups": {g: {str(k): r for k, r in sorted(v.items())} for g, v in table.estimated_groups.items()},
            "estimated_blocks": table.estimated_blocks,
            "rechecked": [{"anchor": d.item, "stored": d.stored, "now": d.now, "stored_hours_ago": d.age_s / 3600}
                          for d in table.drifts],
            # this run's control entry (toolchain/latency/control.py); null when it measured nothing
            "control": None if table.control is None else table.control.as_dict()}


def _print_table(table, model: Path, backend: str, config) -> None:
    t = Table(title=f"Latency table of {model.name} on {backend} (ratio to the unpruned model, {table.base_ms:.2f} ms)")
    t.add_column("entry")
    t.add_column("widths k: ratio")
    for gid, samples in table.groups.items():
        t.add_row(gid, "  ".join(f"{k}: {r:.3f}" for k, r in sorted(samples.items())))
    for bid, ratio in table.blocks.items():
        t.add_row(f"{bid} (removed)", f"{ratio:.3f}")
    for name, a in table.anchors.items():
        changed = f"{len(a.kept)} groups narrowed" if a.kept else f"{len(a.removed)} blocks removed"
        t.add_row(f"{name} ({changed})", f"{a.ratio:.3f}")
    for gid, samples in table.estimated_groups.items():
        t.add_row(f"{gid} (estimated)", "  ".join(f"{k}: {r:.3f}" for k, r in sorted(samples.items())))
    for bid, ratio in table.estimated_blocks.items():
        t.add_row(f"{bid} (removed, estimated)", f"{ratio:.3f}")
    out.print(t)
    out.print(f"{table.measured} entries measured ({config.table} table)")


# After this module's commands, so `compress --help` lists them in pipeline order.
from toolchain import cli_train  # noqa: E402,F401 - registers finetune, train, pipeline, build


def main() -> None:
    app()


if __name__ == "__main__":
    main()
