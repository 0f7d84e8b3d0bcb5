"""The `compress` command line: parse, call the library, render. No pruning logic lives here.

Exit codes (DESIGN.md): 0 success, 1 the check a command ran failed, 2 bad input (one line on
stderr, no traceback unless --debug).
"""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from graphs.errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Latency-budgeted width and depth pruning of CNNs: PyTorch -> ONNX -> pruned model + torch weights.")
out = Console()
err = Console(stderr=True)
DEBUG = {"on": os.environ.get("COMPRESS_DEBUG") == "1"}


@app.callback()
def _global(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.")) -> None:
    DEBUG["on"] = DEBUG["on"] or debug


def command(fn):
    """Turn InputError (and unreadable files) into the one-line, exit-2 contract."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            if DEBUG["on"]:
                raise
            err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        except (PermissionError, IsADirectoryError) as exc:
            if DEBUG["on"]:
                raise
            err.print(f"[red]error:[/red] {exc.filename}: {exc.strerror}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
    return app.command()(wrapper)


def _parse_shape(text: Optional[str]) -> Optional[tuple[int, ...]]:
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--input-shape must be comma-separated integers like 1,3,224,224, got {text!r}") from None
    if len(shape) < 2 or any(v <= 0 for v in shape):
        raise InputError(f"--input-shape must be positive integers like 1,3,224,224, got {text!r}")
    return shape


def _print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=float) + "\n")


@command
def export(
    spec: str = typer.Argument(..., help="torchvision:NAME, timm:NAME, builtin:NAME (resnet20, resnet56, vgg19_bn) or path/to/file.py:factory"),
    output: Path = typer.Option(..., "-o", "--output", help="ONNX file to write"),
    input_shape: Optional[str] = typer.Option(None, help="N,C,H,W (default: 1,3,224,224; 1,3,32,32 for builtin)"),
    checkpoint: Optional[Path] = typer.Option(None, help="state dict to load: .safetensors, or a torch file loaded with weights_only=True"),
) -> None:
    """Export a PyTorch model to ONNX, keeping BatchNorm and torch parameter names and values."""
    from toolchain.export import export_spec

    model = export_spec(spec, str(output), input_shape=_parse_shape(input_shape),
                        checkpoint=str(checkpoint) if checkpoint else None)
    out.print(f"wrote {output} ({len(model.graph.node)} nodes, {len(model.graph.initializer)} initializers)")


@command
def analyze(
    model: Path = typer.Argument(..., help="ONNX file (from `compress export`)"),
    as_json: bool = typer.Option(False, "--json", help="print the analysis as JSON"),
) -> None:
    """Show the channel dependency groups (what can be pruned, and why not) and the removable blocks."""
    from graphs.blocks import removable_blocks
    from graphs.deps import analyze as analyze_graph
    from graphs.onnx_io import load_model

    analysis = analyze_graph(load_model(model))
    blocks = removable_blocks(analysis.model, analysis.shapes)
    if as_json:
        _print_json({"groups": [g.as_dict() for g in analysis.groups], "blocks": [b.as_dict() for b in blocks]})
        return
    table = Table(title=f"Channel groups of {model.name}")
    for col in ("group", "channels", "prunable", "members / reason"):
        table.add_column(col)
    for g in analysis.groups:
        detail = ", ".join(g.members[:4]) + (f" (+{len(g.members) - 4})" if len(g.members) > 4 else "")
        table.add_row(g.id, str(g.channels) + (f" x{g.multiplicity}" if g.multiplicity > 1 else ""),
                      "[green]yes[/green]" if g.prunable else "[red]no[/red]", detail if g.prunable else g.reason)
    out.print(table)
    btable = Table(title="Removable blocks and layers")
    for col in ("block", "kind", "width in -> out", "members"):
        btable.add_column(col)
    for b in blocks:
        reinit = f" (re-creates {b.as_dict()['reinit']})" if b.as_dict()["reinit"] else ""
        btable.add_row(b.id, b.kind, f"{b.width_in} -> {b.width_out}", ", ".join(b.members) + reinit)
    out.print(btable)
    prunable = sum(g.prunable for g in analysis.groups)
    out.print(f"{len(analysis.groups)} groups, {prunable} prunable, "
              f"{sum(g.channels for g in analysis.groups if g.prunable)} prunable channels; {len(blocks)} removable blocks")


@command
def prune(
    model: Path = typer.Argument(..., help="ONNX file (from `compress export`)"),
    output: Path = typer.Option(..., "-o", "--output", help="output directory"),
    plan: Optional[Path] = typer.Option(None, help="a Plan JSON (channels to keep, blocks to remove)"),
    ratio: Optional[float] = typer.Option(None, help="remove this fraction of every prunable group's channels (L1 norm)"),
    budget: Optional[float] = typer.Option(None, help="target latency as a fraction of the unpruned model's"),
    round_to: int = typer.Option(1, "--round-to", help="keep channel counts multiples of N (8 for TensorRT FP16 / ORT NCHWc)"),
    spec: Optional[str] = typer.Option(None, help="torch model spec, if the ONNX does not record one"),
    seed: int = typer.Option(0, help="seed for layers re-created after a layer removal"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Prune: write DIR/model.onnx, DIR/plan.json, DIR/weights.safetensors (synced torch weights) and DIR/summary.json."""
    from graphs.deps import analyze as analyze_graph
    from graphs.onnx_io import load_model
    from graphs.plan import load_plan
    from toolchain.prune import prune_to_dir, uniform_plan

    chosen = [name for name, value in (("--plan", plan), ("--ratio", ratio), ("--budget", budget)) if value is not None]
    if len(chosen) != 1:
        raise InputError("give exactly one of --plan, --ratio or --budget")
    if round_to < 1:
        raise InputError(f"--round-to must be >= 1, got {round_to}")
    if budget is not None:
        raise InputError("--budget needs latency tables and a solver, which this build does not have yet: use --plan or --ratio")
    if plan is not None:
        the_plan = load_plan(plan)
        if round_to > 1:
            the_plan.round_to = round_to
    else:
        the_plan = uniform_plan(analyze_graph(load_model(model)), ratio, round_to)
    with err.status("pruning..."):
        summary = prune_to_dir(str(model), str(output), the_plan, spec=spec, seed=seed)
    if as_json:
        _print_json(summary)
        return
    p, m = summary["params"], summary["macs"]
    out.print(f"wrote {output}/: params {p['before']:,} -> {p['after']:,} ({p['after'] / p['before']:.1%}), "
              f"MACs {m['before']:,} -> {m['after']:,} ({m['after'] / max(1, m['before']):.1%}), "
              f"{len(summary['removed'])} blocks removed")
    for note in summary["notes"]:
        err.print(f"[yellow]note:[/yellow] {note}", highlight=False)


@command
def verify(
    directory: Path = typer.Argument(..., help="a `compress prune` output directory"),
    batch: int = typer.Option(2, help="verification batch size"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Check that the synced torch module and DIR/model.onnx compute the same function (exit 1 if not)."""
    from toolchain.verify import verify_dir

    result = verify_dir(directory, batch=batch)
    if as_json:
        _print_json(result.as_dict())
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
