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
from toolchain.cli_app import RECHECK_HELP, OnnxFile, PrunedDir, TableProgress, app, command, err, out, parse_shape, print_json


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


from toolchain import cli_prune  # noqa: E402,F401 - registers prune here, so --help lists it after analyze


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
