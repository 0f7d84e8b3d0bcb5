"""`compress report DIR`: a Markdown + HTML report with PNG figures for one pruned output directory.

Reads whichever of DIR/summary.json, plan.json, train.json, scores.json, table.json exist (summary.json
and plan.json are required), plus optionally a results folder of run directories for a Pareto plot.
Every figure is followed by the numbers behind it as a table; a figure whose data is absent is skipped
and the report says so. Imports matplotlib (Agg) and numpy only -- never torch.
"""
from __future__ import annotations

from pathlib import Path

from graphs.atomic import write_text
from graphs.errors import InputError


from toolchain.report.document import MAX_ROWS, Doc, fmt_count, latency_target, load_json, fmt_num, fmt_ratio
from toolchain.report.figures import fig_channels, fig_importance, fig_latency, fig_table, fig_training
from toolchain.report.pareto import fig_pareto


def _headline(directory: Path, summary: dict, plan: dict | None, train: dict | None, doc: Doc) -> None:
    model = (plan or {}).get("model") or {}
    prov = (plan or {}).get("provenance") or {}
    spec = summary.get("spec") or model.get("spec") or "unknown"
    doc.heading(1, f"Pruning report: {spec}")
    doc.para(f"Directory `{directory}`" + (f", input shape {model.get('input_shape')}" if model.get("input_shape") else ""))
    p, m = summary.get("params") or {}, summary.get("macs") or {}
    removed = [str(r.get("id")) for r in summary.get("removed") or []]
    latency = summary.get("latency") or {}
    items = [
        f"**Params**: {fmt_count(p.get('before'))} -> {fmt_count(p.get('after'))} (ratio {fmt_ratio(p.get('before'), p.get('after'))})",
        f"**MACs**: {fmt_count(m.get('before'))} -> {fmt_count(m.get('after'))} (ratio {fmt_ratio(m.get('before'), m.get('after'))})",
        f"**Removed blocks** ({len(removed)}): " + (", ".join(removed) if removed else "none"),
    ]
    pruned_groups = [g for g in summary.get("groups") or [] if g.get("after") != g.get("before")]
    items.append(f"**Groups pruned**: {len(pruned_groups)} of {len(summary.get('groups') or [])}")
    budget = latency.get("budget", prov.get("budget"))
    if latency:
        ref, pr = latency.get("reference_ms"), latency.get("pruned_ms")
        pred_ms = f" ({latency['predicted'] * ref:.3f} ms)" if ref and latency.get("predicted") is not None else ""
        bud_ms = f" ({budget * ref:.3f} ms)" if ref and budget else ""
        met = latency.get("met")
        items.append(f"**Latency** on `{latency_target(latency)}`: budget {fmt_num(budget)}{bud_ms}, "
                     f"predicted {fmt_num(latency.get('predicted'))}{pred_ms}, measured {fmt_num(latency.get('measured'))} "
                     f"({fmt_num(pr)} ms vs {fmt_num(ref)} ms unpruned): "
                     + ("**met**" if met else "**not met**" if met is not None else "met: unknown"))
    else:
        items.append(f"**Latency**: budget {fmt_num(budget)}, predicted {fmt_num(prov.get('predicted_latency_ratio'))}, "
                     "measured: not recorded")
    before_ft = ((train or {}).get("before") or {}).get("top1")
    after_ft = ((train or {}).get("after") or {}).get("top1")
    unpruned = (((train or {}).get("teacher") or {}).get("top1") or (train or {}).get("baseline_top1")
                or summary.get("baseline_top1") or ((summary.get("accuracy") or {}).get("top1")))
    norms = summary.get("batchnorm") or {}  # what "after pruning" means: re-estimated statistics or the unpruned ones
    stats = (f" (BatchNorm statistics re-estimated on {norms['images']} images)" if norms.get("recalibrated")
             else " (the unpruned model's BatchNorm statistics)" if norms else "")
    if train:
        items.append(f"**Top-1** (%, {train.get('data', '?')}): unpruned {fmt_num(unpruned, '{:.2f}')}, "
                     f"after pruning {fmt_num(before_ft, '{:.2f}')}{stats}, after fine-tuning {fmt_num(after_ft, '{:.2f}')}")
    else:
        items.append("**Top-1**: not fine-tuned yet (no train.json)")
    items.append(f"**Criterion** {prov.get('criterion', 'n/a')}, **solver** {prov.get('solver', 'n/a')}, "
                 f"**mode** {prov.get('mode', 'n/a')}" + (f", round to {plan.get('round_to')}" if plan and plan.get("round_to") else ""))
    doc.heading(2, "Summary")
    doc.bullets(items)
    notes = summary.get("notes") or []
    if notes:
        doc.para("Notes from pruning:")
        doc.bullets([str(n) for n in notes[:MAX_ROWS]])


# ----------------------------------------------------------------------------------------- entry
def write_report(directory, results: str | None = None, out: str | None = None) -> dict:
    """Write DIR/report/ (or OUT): report.md, report.html and PNG figures.

    Returns {"markdown": path, "html": path, "figures": {name: path}, "skipped": [figure titles]}.
    Raises InputError for a missing directory, missing summary.json/plan.json or unreadable JSON.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: no such directory")
    summary = load_json(directory / "summary.json", required=True)
    plan = load_json(directory / "plan.json", required=True)
    if not isinstance(summary, dict) or not isinstance(plan, dict):
        raise InputError(f"{directory}: summary.json and plan.json must hold JSON objects")
    train = load_json(directory / "train.json")
    scores = load_json(directory / "scores.json")
    table = load_json(directory / "table.json")
    out_dir = Path(out) if out else directory / "report"
    out_dir.mkdir(parents=True, exist_ok=True)

    doc = Doc()
    _headline(directory, summary, plan, train, doc)
    figures: dict[str, str] = {}
    skipped: list[str] = []

    def note(name, result):
        paths = result if isinstance(result, list) else [result] if result else []
        if not paths:
            skipped.append(name)
        for p in paths:
            figures[p.stem] = str(p)

    note("channels", fig_channels(summary, out_dir, doc))
    note("importance", fig_importance(scores, out_dir, doc))
    note("latency_table", fig_table(table, summary, out_dir, doc))
    note("latency", fig_latency(summary, plan, out_dir, doc))
    note("pareto", fig_pareto(results, out_dir, doc))
    note("training", fig_training(train, out_dir, doc))
    if skipped:
        doc.heading(2, "Skipped figures")
        doc.para("Not drawn for lack of data: " + ", ".join(skipped) + ".")

    md, page = out_dir / "report.md", out_dir / "report.html"
    write_text(md, doc.markdown())
    write_text(page, doc.html(f"compress report: {summary.get('spec') or directory.name}"))
    return {"markdown": str(md), "html": str(page), "figures": figures, "skipped": skipped}
