"""The report's figures (matplotlib, Agg): each draws one PNG and adds the numbers behind it to the
document as a table, or says why it was skipped."""
from __future__ import annotations

from pathlib import Path

from graphs.atomic import atomic_file
from graphs.errors import InputError


from toolchain.report.document import MAX_ROWS, _Doc, _load, _num, _ratio

HIGHLIGHT = 5


def _save_fig(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)



def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _tick_labels(ax, labels: list[str], rotation: int = 90, max_labels: int = 60, colors=None):
    n = len(labels)
    step = max(1, -(-n // max_labels))
    idx = list(range(0, n, step))
    if colors and step > 1:  # highlighted labels (removed blocks) are always shown
        idx = sorted(set(idx) | {i for i, c in enumerate(colors) if c})
    ax.set_xticks(idx)
    ax.set_xticklabels([labels[i] for i in idx], rotation=rotation, fontsize=7 if n > 20 else 8,
                       ha="center" if rotation == 90 else "right")
    if colors:
        for tick, i in zip(ax.get_xticklabels(), idx):
            if colors[i]:
                tick.set_color(colors[i])
    return step


# ----------------------------------------------------------------------------------------- figures
def _in_removed(gid: str, removed: list[str]) -> bool:
    return any(gid == r or gid.startswith(r + ".") for r in removed)


def _fig_channels(summary: dict, out: Path, doc: _Doc) -> Path | None:
    groups = summary.get("groups") or []
    doc.heading(2, "1. Channels per group, before and after")
    if not groups:
        doc.para("Skipped: summary.json has no `groups`.")
        return None
    removed = [r.get("id") for r in summary.get("removed") or [] if r.get("id")]
    plt = _plt()
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
    _tick_labels(ax, ids, colors=["#d62728" if r else None for r in in_rem])
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
    _save_fig(fig, path)
    doc.image(path.name, "Channels per group before/after (red: inside a removed block)")
    rows = []
    for g, r in zip(groups, in_rem):
        b, a = g.get("before"), g.get("after")
        rows.append([str(g.get("id")), b, a, _ratio(b, a), _num(g.get("prunable")), "yes" if r else ""])
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


def _fig_importance(scores: dict | None, out: Path, doc: _Doc) -> Path | None:
    doc.heading(2, "2. Layer importance per criterion")
    crit = (scores or {}).get("criteria") or {}
    crit = {k: v for k, v in crit.items() if isinstance(v, dict) and v}
    if not crit:
        doc.para("Skipped: no `scores.json` with layer scores in this directory.")
        return None
    plt = _plt()
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
    _tick_labels(ax, [str(b) for b in blocks])
    ax.set_ylabel("importance (min-max normalised per criterion)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlim(-0.5, len(blocks) - 0.5)
    ax.set_title("Layer (block) importance by criterion; low = removed first", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0)
    ax.grid(alpha=0.3)
    path = out / "importance.png"
    _save_fig(fig, path)
    doc.image(path.name, "Layer importance per criterion, normalised to [0, 1]")
    names = list(crit)
    rows = []
    for i, b in enumerate(blocks):
        rows.append([str(b)] + [(f"{crit[n][b]:.4g}" if crit[n].get(b) is not None else "n/a") for n in names]
                    + [f"{np.nanmean([norm[n][i] for n in names]):.3f}"])
    doc.table(["block"] + names + ["mean normalised"], rows, "Raw scores; blocks in topological order.")
    return path


def _fig_table(table: dict | None, summary: dict, out: Path, doc: _Doc) -> list[Path]:
    doc.heading(2, "3. Latency table")
    groups = {g: c for g, c in ((table or {}).get("groups") or {}).items() if isinstance(c, dict) and c}
    blocks = (table or {}).get("blocks") or {}
    if not groups and not blocks:
        doc.para("Skipped: no `table.json` (latency table) in this directory.")
        return []
    plt = _plt()
    import numpy as np

    widths = table.get("widths") or {}
    doc.para(f"Base latency {_num(table.get('base_ms'))} ms on `{table.get('backend', '?')}` "
             f"({table.get('device', 'unknown device')}). Ratios are of the unpruned model's latency.")
    paths = []
    if groups:
        curves = {}
        for g, c in groups.items():
            pts = sorted((int(k), float(v)) for k, v in c.items())
            curves[g] = pts
        span = {g: max(v for _, v in p) - min(v for _, v in p) for g, p in curves.items()}
        top = sorted(curves, key=lambda g: -span[g])[:HIGHLIGHT]
        fig, ax = plt.subplots(figsize=(8.5, 5))
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
        ax.set_xlabel("kept width / full width")
        ax.set_ylabel("model latency ratio")
        ax.set_title(f"Latency vs kept width per group ({HIGHLIGHT} most latency-sensitive highlighted)", fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.3)
        path = out / "latency_table.png"
        _save_fig(fig, path)
        paths.append(path)
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
    else:
        doc.para("No per-group curves in `table.json`.")
    if blocks:
        ids = list(blocks)
        vals = np.array([float(blocks[b]) for b in ids])
        removed = {r.get("id") for r in summary.get("removed") or []}
        fig, ax = plt.subplots(figsize=(min(20, max(7, 0.3 * len(ids) + 3)), 4.2))
        colors = ["#d62728" if b in removed else "#2ca02c" for b in ids]
        ax.bar(np.arange(len(ids)), vals, color=colors)
        _tick_labels(ax, ids, colors=["#d62728" if b in removed else None for b in ids])
        lo = float(vals.min())
        ax.set_ylim(max(0.0, lo - (1.0 - lo) * 0.5 - 0.01), 1.0 + (1.0 - lo) * 0.05 + 0.001)
        ax.axhline(1.0, color="#444", linewidth=0.8, linestyle="--")
        ax.set_ylabel("latency ratio with the block removed")
        ax.set_title("Block removal latency ratios" + (" (red: removed in this plan)" if removed else ""), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        path = out / "latency_blocks.png"
        _save_fig(fig, path)
        paths.append(path)
        doc.image(path.name, "Latency ratio after removing each block")
        doc.table(["block", "latency ratio", "saving", "removed"],
                  [[b, f"{float(blocks[b]):.4f}", f"{1 - float(blocks[b]):.4f}", "yes" if b in removed else ""]
                   for b in ids])
    else:
        doc.para("No block-removal entries in `table.json`.")
    return paths


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


def _fig_latency(summary: dict, plan: dict | None, out: Path, doc: _Doc) -> Path | None:
    doc.heading(2, "4. Predicted vs measured latency")
    latency = summary.get("latency") or {}
    rows = _history(latency)
    rows = [r for r in rows if r.get("measured") is not None and r.get("predicted") is not None]
    if not rows:
        doc.para("Skipped: summary.json has no measured `latency` (pruned with --ratio or --plan, not --budget).")
        return None
    plt = _plt()

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
    _save_fig(fig, path)
    doc.image(path.name, "Predicted vs measured latency ratio per attempt (s = stage, a = attempt)")
    doc.table(["stage", "attempt", "target", "predicted", "predicted (additive)", "measured", "error",
               "reference ms", "pruned ms"],
              [[_num(r.get("stage")), _num(r.get("attempt")), _num(r.get("target")), _num(r.get("predicted")),
                _num(r.get("predicted_additive")), _num(r.get("measured")),
                f"{r['measured'] - r['predicted']:+.3f}", _num(r.get("reference_ms")), _num(r.get("pruned_ms"))]
               for r in rows])
    return path


def _pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i)
        front.append(not dominated)
    return front


def _collect_runs(results: Path, doc_notes: list[str]) -> list[dict]:
    runs = []
    candidates = sorted(p for p in results.iterdir() if p.is_dir())
    if (results / "summary.json").is_file() or (results / "train.json").is_file():
        candidates.insert(0, results)
    for d in candidates:
        summary = _safe_load(d / "summary.json")
        train = _safe_load(d / "train.json")
        if summary is None and train is None:
            continue
        top1 = ((train or {}).get("after") or {}).get("top1")
        if top1 is None:
            doc_notes.append(f"`{d.name}`: no fine-tuned top-1 (train.json missing or without `after`)")
            continue
        latency = (summary or {}).get("latency") or {}
        x = latency.get("measured")
        baseline = False
        if x is None:
            unpruned = summary is None or (not summary.get("removed") and all(
                g.get("before") == g.get("after") for g in summary.get("groups") or []))
            if not unpruned:
                doc_notes.append(f"`{d.name}`: pruned but no measured latency ratio")
                continue
            x, baseline = 1.0, True
        params = (summary or {}).get("params") or {}
        runs.append({"name": d.name, "x": float(x), "top1": float(top1),
                     "top5": ((train or {}).get("after") or {}).get("top5"),
                     "before_ft": ((train or {}).get("before") or {}).get("top1"),
                     "params": _ratio(params.get("before"), params.get("after")) if params else "1.000",
                     "baseline": baseline})
    return runs


def _safe_load(path: Path):
    try:
        return _load(path)
    except InputError:
        return None


def _fig_pareto(results: str | None, out: Path, doc: _Doc) -> Path | None:
    doc.heading(2, "5. Accuracy vs latency (Pareto)")
    if not results:
        doc.para("Skipped: no results folder given (`compress report DIR --results RUNS/`).")
        return None
    root = Path(results)
    if not root.is_dir():
        raise InputError(f"--results {results}: not a directory")
    notes: list[str] = []
    runs = _collect_runs(root, notes)
    if not runs:
        doc.para(f"Skipped: no run in `{results}` has both a latency ratio and a fine-tuned top-1.")
        if notes:
            doc.bullets(notes)
        return None
    plt = _plt()

    front = _pareto_front([(r["x"], r["top1"]) for r in runs])
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    fx = sorted((r["x"], r["top1"]) for r, f in zip(runs, front) if f)
    ax.step([p[0] for p in fx], [p[1] for p in fx], where="post", color="#2ca02c", linewidth=1.5,
            label="Pareto front", zorder=2)
    for r, f in zip(runs, front):
        ax.scatter([r["x"]], [r["top1"]], s=70 if f else 40, marker="*" if r["baseline"] else "o",
                   color="#2ca02c" if f else "#7f7f7f", edgecolors="black" if f else "none", zorder=3)
    ax.scatter([], [], color="#2ca02c", edgecolors="black", label="on the front")
    ax.scatter([], [], color="#7f7f7f", label="dominated")
    if any(r["baseline"] for r in runs):
        ax.scatter([], [], marker="*", color="#7f7f7f", label="unpruned baseline")
    order = sorted(range(len(runs)), key=lambda i: (runs[i]["x"], runs[i]["top1"]))
    for k, i in enumerate(order):
        r = runs[i]
        ax.annotate(r["name"], (r["x"], r["top1"]), textcoords="offset points",
                    xytext=(6, 6 if k % 2 == 0 else -11), fontsize=8)
    xs = [r["x"] for r in runs]
    ys = [r["top1"] for r in runs]
    xpad = max(0.03, 0.1 * (max(xs) - min(xs)))
    ypad = max(0.5, 0.12 * (max(ys) - min(ys)))
    ax.set_xlim(min(xs) - xpad, max(xs) + 2.5 * xpad)
    ax.set_ylim(min(ys) - ypad, max(ys) + ypad)
    ax.set_xlabel("measured latency ratio (lower is faster)")
    ax.set_ylabel("top-1 after fine-tuning (%)")
    ax.set_title(f"Accuracy vs latency: {len(runs)} runs in {root.name}", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    path = out / "pareto.png"
    _save_fig(fig, path)
    doc.image(path.name, "Top-1 after fine-tuning vs measured latency ratio; the Pareto front in green")
    rows = [[r["name"], f"{r['x']:.3f}", f"{r['top1']:.2f}", _num(r["top5"], "{:.2f}"), _num(r["before_ft"], "{:.2f}"),
             r["params"], "yes" if f else ""] for r, f in sorted(zip(runs, front), key=lambda t: t[0]["x"])]
    doc.table(["run", "latency ratio", "top-1 (%)", "top-5 (%)", "top-1 before fine-tuning", "params ratio",
               "Pareto"], rows)
    if notes:
        doc.para("Runs left out:")
        doc.bullets(notes)
    return path


def _fig_training(train: dict | None, out: Path, doc: _Doc) -> Path | None:
    doc.heading(2, "6. Fine-tuning curve")
    history = [h for h in (train or {}).get("history") or [] if h.get("val_top1") is not None]
    if not history:
        doc.para("Skipped: no `train.json` with per-epoch validation accuracy (run `compress finetune`).")
        return None
    plt = _plt()

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
    _save_fig(fig, path)
    doc.image(path.name, "Validation top-1 per epoch")
    doc.table(["epoch", "train loss", "lr", "val top-1", "val top-5", "val loss"],
              [[_num(h.get("epoch", i + 1)), _num(h.get("train_loss"), "{:.4f}"), _num(h.get("lr"), "{:.2g}"),
                _num(h.get("val_top1"), "{:.2f}"), _num(h.get("val_top5"), "{:.2f}"), _num(h.get("val_loss"), "{:.4f}")]
               for i, h in enumerate(history)])
    return path


# ----------------------------------------------------------------------------------------- headline
