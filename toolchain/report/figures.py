"""The report's figures (matplotlib, Agg): each draws one PNG and adds the numbers behind it to the
document as a table, or says why it was skipped."""
from __future__ import annotations

from pathlib import Path

from toolchain.report.document import MAX_ROWS, Doc, fmt_num, fmt_ratio
from toolchain.report.plotting import finish, pyplot, save_figure, tick_labels

HIGHLIGHT = 5


# ----------------------------------------------------------------------------------------- figures
def _in_removed(gid: str, removed: list[str]) -> bool:
    return any(gid == r or gid.startswith(r + ".") for r in removed)


def fig_channels(summary: dict, out: Path, doc: Doc) -> Path | None:
    groups = summary.get("groups") or []
    doc.heading(2, "1. Channels per group, before and after")
    if not groups:
        doc.para("Skipped: summary.json has no `groups`.")
        return None
    removed = [r.get("id") for r in summary.get("removed") or [] if r.get("id")]
    plt = pyplot()
    import numpy as np

    ids = [str(g.get("id")) for g in groups]
    before = np.array([g.get("before") or 0 for g in groups], dtype=float)
    after = np.array([g.get("after") or 0 for g in groups], dtype=float)
    in_rem = [_in_removed(i, removed) for i in ids]
    x = np.arange(len(ids))
    fig, ax = plt.subplots(figsize=(min(24, max(8, 0.28 * len(ids) + 3)), 4.8))
    w = 0.42
    ax.bar(x - w / 2, before, w, label="before", color="#b0c4de")
    colors = ["#d62728" if r else "#1f77b4" for r in in_rem]
    ax.bar(x + w / 2, after, w, label="after", color=colors)
    if any(in_rem):
        ax.bar(x[np.array(in_rem)] + w / 2, before[np.array(in_rem)], w, fill=False, hatch="///",
               edgecolor="#d62728", linewidth=0, label="in a removed block")
    for i, g in enumerate(groups):
        if g.get("prunable") is False:
            ax.plot(x[i], before[i], marker="v", color="#555", markersize=4, linestyle="none",
                    label="not prunable" if i == next(k for k, gg in enumerate(groups) if gg.get("prunable") is False) else None)
    tick_labels(ax, ids, colors=["#d62728" if r else None for r in in_rem])
    ax.set_ylabel("output channels")
    ax.set_xlim(-0.7, len(ids) - 0.3)
    title = "Channels per dependency group"
    if removed:
        shown = ", ".join(removed[:8]) + (f" (+{len(removed) - 8})" if len(removed) > 8 else "")
        title += f"\nremoved blocks: {shown}"
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    ax.grid(axis="y", alpha=0.3)
    path = out / "channels.png"
    save_figure(fig, path)
    doc.image(path.name, "Channels per group before/after (red: inside a removed block)")
    rows = []
    for g, r in zip(groups, in_rem):
        b, a = g.get("before"), g.get("after")
        rows.append([str(g.get("id")), b, a, fmt_ratio(b, a), fmt_num(g.get("prunable")), "yes" if r else ""])
    order = sorted(range(len(rows)), key=lambda i: (float(groups[i].get("after") or 0) / max(1, groups[i].get("before") or 1)))
    note = None
    if len(rows) > MAX_ROWS:
        keep = sorted(order[:MAX_ROWS])
        rows = [rows[i] for i in keep]
        note = f"The {MAX_ROWS} most pruned of {len(groups)} groups, in topological order."
    doc.table(["group", "before", "after", "kept", "prunable", "in removed block"], rows, note)
    if removed:
        doc.table(["removed block", "kind", "members"],
                  [[str(r.get("id")), str(r.get("kind", "")), ", ".join(map(str, r.get("members") or []))[:120]]
                   for r in summary.get("removed") or []])
    return path


def fig_importance(scores: dict | None, out: Path, doc: Doc) -> Path | None:
    doc.heading(2, "2. Layer importance per criterion")
    crit = (scores or {}).get("criteria") or {}
    crit = {k: v for k, v in crit.items() if isinstance(v, dict) and v}
    if not crit:
        doc.para("Skipped: no `scores.json` with layer scores in this directory.")
        return None
    plt = pyplot()
    import numpy as np

    blocks = list((scores or {}).get("blocks") or [])
    for v in crit.values():
        blocks += [b for b in v if b not in blocks]
    norm = {}
    for name, v in crit.items():
        vals = np.array([float(v[b]) if v.get(b) is not None else np.nan for b in blocks])
        lo, hi = np.nanmin(vals), np.nanmax(vals)
        norm[name] = (vals - lo) / (hi - lo) if hi > lo else np.where(np.isnan(vals), np.nan, 1.0)
    x = np.arange(len(blocks))
    fig, ax = plt.subplots(figsize=(min(22, max(8, 0.3 * len(blocks) + 3)), 4.6))
    markers = "osD^v<>px*h"
    for k, (name, vals) in enumerate(norm.items()):
        ax.plot(x, vals, marker=markers[k % len(markers)], markersize=4, linewidth=1.3, label=name, alpha=0.85)
    tick_labels(ax, [str(b) for b in blocks])
    ax.set_ylabel("importance (min-max normalised per criterion)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlim(-0.5, len(blocks) - 0.5)
    ax.set_title("Layer (block) importance by criterion; low = removed first", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0)
    ax.grid(alpha=0.3)
    path = out / "importance.png"
    save_figure(fig, path)
    doc.image(path.name, "Layer importance per criterion, normalised to [0, 1]")
    names = list(crit)
    rows = []
    for i, b in enumerate(blocks):
        rows.append([str(b)] + [(f"{crit[n][b]:.4g}" if crit[n].get(b) is not None else "n/a") for n in names]
                    + [f"{np.nanmean([norm[n][i] for n in names]):.3f}"])
    doc.table(["block"] + names + ["mean normalised"], rows, "Raw scores; blocks in topological order.")
    return path


def fig_table(table: dict | None, summary: dict, out: Path, doc: Doc) -> list[Path]:
    doc.heading(2, "3. Latency table")
    groups = {g: c for g, c in ((table or {}).get("groups") or {}).items() if isinstance(c, dict) and c}
    blocks = (table or {}).get("blocks") or {}
    if not groups and not blocks:
        doc.para("Skipped: no `table.json` (latency table) in this directory.")
        return []
    doc.para(f"Base latency {fmt_num(table.get('base_ms'))} ms on `{table.get('backend', '?')}` "
             f"({table.get('device', 'unknown device')}). Ratios are of the unpruned model's latency.")
    paths = []
    if groups:
        paths.append(_group_curves(groups, table.get("widths") or {}, out, doc))
    else:
        doc.para("No per-group curves in `table.json`.")
    if blocks:
        paths.append(_block_bars(blocks, {r.get("id") for r in summary.get("removed") or []}, out, doc))
    else:
        doc.para("No block-removal entries in `table.json`.")
    return paths


def _group_curves(groups: dict, widths: dict, out: Path, doc: Doc) -> Path:
    curves = {g: sorted((int(k), float(v)) for k, v in c.items()) for g, c in groups.items()}
    span = {g: max(v for _, v in p) - min(v for _, v in p) for g, p in curves.items()}
    top = sorted(curves, key=lambda g: -span[g])[:HIGHLIGHT]
    fig, ax = pyplot().subplots(figsize=(8.5, 5))
    for g, pts in curves.items():
        if g in top:
            continue
        full = float(widths.get(g) or pts[-1][0])
        ax.plot([w / full for w, _ in pts], [v for _, v in pts], color="#bbb", linewidth=0.8, zorder=1)
    for g in top:
        pts = curves[g]
        full = float(widths.get(g) or pts[-1][0])
        ax.plot([w / full for w, _ in pts], [v for _, v in pts], marker="o", markersize=3, linewidth=1.8,
                label=f"{g} (full {int(full)})", zorder=3)
    ax.plot([], [], color="#bbb", label=f"other groups ({len(curves) - len(top)})")
    path = finish(fig, ax, out / "latency_table.png", "kept width / full width", "model latency ratio",
                  f"Latency vs kept width per group ({HIGHLIGHT} most latency-sensitive highlighted)")
    doc.image(path.name, "Latency-table curves: ratio vs kept width per group")
    rows = []
    for g in sorted(curves, key=lambda g: -span[g]):
        pts = curves[g]
        full = int(widths.get(g) or pts[-1][0])
        half = min(pts, key=lambda p: abs(p[0] - full / 2))
        rows.append([g, full, len(pts), f"{pts[0][1]:.4f} @ {pts[0][0]}", f"{half[1]:.4f} @ {half[0]}",
                     f"{span[g]:.4f}"])
    doc.table(["group", "full width", "entries", "ratio at smallest width", "ratio near half width", "range"],
              rows, "Sorted by range (most latency-sensitive first).")
    return path


def _block_bars(blocks: dict, removed: set, out: Path, doc: Doc) -> Path:
    import numpy as np

    ids = list(blocks)
    vals = np.array([float(blocks[b]) for b in ids])
    fig, ax = pyplot().subplots(figsize=(min(20, max(7, 0.3 * len(ids) + 3)), 4.2))
    colors = ["#d62728" if b in removed else "#2ca02c" for b in ids]
    ax.bar(np.arange(len(ids)), vals, color=colors)
    tick_labels(ax, ids, colors=["#d62728" if b in removed else None for b in ids])
    lo = float(vals.min())
    ax.set_ylim(max(0.0, lo - (1.0 - lo) * 0.5 - 0.01), 1.0 + (1.0 - lo) * 0.05 + 0.001)
    ax.axhline(1.0, color="#444", linewidth=0.8, linestyle="--")
    ax.set_ylabel("latency ratio with the block removed")
    ax.set_title("Block removal latency ratios" + (" (red: removed in this plan)" if removed else ""), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    path = out / "latency_blocks.png"
    save_figure(fig, path)
    doc.image(path.name, "Latency ratio after removing each block")
    doc.table(["block", "latency ratio", "saving", "removed"],
              [[b, f"{float(blocks[b]):.4f}", f"{1 - float(blocks[b]):.4f}", "yes" if b in removed else ""]
               for b in ids])
    return path


def _history(latency: dict) -> list[dict]:
    rows = []
    for h in latency.get("history") or []:
        measured = h.get("ratio")
        if measured is None and h.get("reference_ms") and h.get("pruned_ms") is not None:
            measured = h["pruned_ms"] / h["reference_ms"]
        rows.append({**h, "measured": measured})
    if not rows and latency.get("predicted") is not None and latency.get("measured") is not None:
        rows.append({"stage": 1, "attempt": 0, "target": latency.get("budget"), "predicted": latency["predicted"],
                     "predicted_additive": latency.get("predicted_additive"), "measured": latency["measured"],
                     "reference_ms": latency.get("reference_ms"), "pruned_ms": latency.get("pruned_ms")})
    return rows


def fig_latency(summary: dict, plan: dict | None, out: Path, doc: Doc) -> Path | None:
    doc.heading(2, "4. Predicted vs measured latency")
    latency = summary.get("latency") or {}
    rows = _history(latency)
    rows = [r for r in rows if r.get("measured") is not None and r.get("predicted") is not None]
    if not rows:
        doc.para("Skipped: summary.json has no measured `latency` (pruned with --ratio or --plan, not --budget).")
        return None
    plt = pyplot()

    budget = latency.get("budget") or ((plan or {}).get("provenance") or {}).get("budget")
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    pred = [r["predicted"] for r in rows]
    meas = [r["measured"] for r in rows]
    add = [(r.get("predicted_additive"), r["measured"]) for r in rows if r.get("predicted_additive") is not None]
    vals = pred + meas + [a for a, _ in add] + ([budget] if budget else [])
    lo, hi = min(vals), max(vals)
    pad = max(0.03, 0.08 * (hi - lo))
    lo, hi = max(0.0, lo - pad), hi + pad
    ax.plot([lo, hi], [lo, hi], color="#444", linewidth=1, linestyle="--", label="y = x")
    if budget:
        ax.axhline(budget, color="#d62728", linewidth=1, linestyle=":", label=f"budget {budget:.3f}")
    if add:
        ax.scatter([a for a, _ in add], [m for _, m in add], marker="x", color="#ff7f0e", s=40,
                   label="additive prediction", zorder=3)
    ax.scatter(pred, meas, color="#1f77b4", s=45, label="corrected prediction", zorder=4)
    for r in rows:
        ax.annotate(f"s{r.get('stage', '?')}a{r.get('attempt', '?')}", (r["predicted"], r["measured"]),
                    textcoords="offset points", xytext=(5, 4), fontsize=7, color="#1f77b4")
    if latency.get("predicted") is not None and latency.get("measured") is not None:
        ax.scatter([latency["predicted"]], [latency["measured"]], s=160, facecolors="none", edgecolors="#2ca02c",
                   linewidths=1.8, label="final", zorder=5)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("predicted latency ratio")
    ax.set_ylabel("measured latency ratio")
    ax.set_title(f"Predicted vs measured ({latency.get('backend', 'backend ?')})", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)  # never over points
    ax.grid(alpha=0.3)
    path = out / "latency_pred_vs_measured.png"
    save_figure(fig, path)
    doc.image(path.name, "Predicted vs measured latency ratio per attempt (s = stage, a = attempt)")
    doc.table(["stage", "attempt", "target", "predicted", "predicted (additive)", "measured", "error",
               "reference ms", "pruned ms"],
              [[fmt_num(r.get("stage")), fmt_num(r.get("attempt")), fmt_num(r.get("target")), fmt_num(r.get("predicted")),
                fmt_num(r.get("predicted_additive")), fmt_num(r.get("measured")),
                f"{r['measured'] - r['predicted']:+.3f}", fmt_num(r.get("reference_ms")), fmt_num(r.get("pruned_ms"))]
               for r in rows])
    return path


def fig_training(train: dict | None, out: Path, doc: Doc) -> Path | None:
    doc.heading(2, "6. Fine-tuning curve")
    history = [h for h in (train or {}).get("history") or [] if h.get("val_top1") is not None]
    if not history:
        doc.para("Skipped: no `train.json` with per-epoch validation accuracy (run `compress finetune`).")
        return None
    plt = pyplot()

    ep = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ax.plot(ep, [h["val_top1"] for h in history], marker="o", color="#1f77b4", label="val top-1")
    before = ((train or {}).get("before") or {}).get("top1")
    teacher = ((train or {}).get("teacher") or {}).get("top1")
    if before is not None:
        ax.axhline(before, color="#d62728", linestyle=":", linewidth=1, label=f"pruned, before fine-tuning ({before:.2f})")
    if teacher is not None:
        ax.axhline(teacher, color="#2ca02c", linestyle="--", linewidth=1, label=f"unpruned teacher ({teacher:.2f})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 (%)")
    handles, labels = ax.get_legend_handles_labels()
    if any(h.get("train_loss") is not None for h in history):
        ax2 = ax.twinx()
        ax2.plot(ep, [h.get("train_loss") for h in history], color="#ff7f0e", linestyle="--", marker=".",
                 label="train loss")
        ax2.set_ylabel("train loss")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8, loc="center right")
    ax.set_title(f"Fine-tuning on {train.get('data', '?')}", fontsize=10)
    ax.grid(alpha=0.3)
    if len(ep) <= 20:
        ax.set_xticks(ep)
    path = out / "training.png"
    save_figure(fig, path)
    doc.image(path.name, "Validation top-1 per epoch")
    doc.table(["epoch", "train loss", "lr", "val top-1", "val top-5", "val loss"],
              [[fmt_num(h.get("epoch", i + 1)), fmt_num(h.get("train_loss"), "{:.4f}"), fmt_num(h.get("lr"), "{:.2g}"),
                fmt_num(h.get("val_top1"), "{:.2f}"), fmt_num(h.get("val_top5"), "{:.2f}"), fmt_num(h.get("val_loss"), "{:.4f}")]
               for i, h in enumerate(history)])
    return path


# ----------------------------------------------------------------------------------------- headline
