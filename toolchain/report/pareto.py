"""The report's accuracy-vs-latency figure over a folder of runs, with its Pareto front."""
from __future__ import annotations

from pathlib import Path

from graphs.errors import InputError
from toolchain.report.document import Doc, fmt_num, fmt_ratio, load_json
from toolchain.report.plotting import finish, pyplot


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
                     "params": fmt_ratio(params.get("before"), params.get("after")) if params else "1.000",
                     "baseline": baseline})
    return runs


def _safe_load(path: Path):
    try:
        return load_json(path)
    except InputError:
        return None


def fig_pareto(results: str | None, out: Path, doc: Doc) -> Path | None:
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
    plt = pyplot()

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
    path = finish(fig, ax, out / "pareto.png", "measured latency ratio (lower is faster)",
                  "top-1 after fine-tuning (%)", f"Accuracy vs latency: {len(runs)} runs in {root.name}")
    doc.image(path.name, "Top-1 after fine-tuning vs measured latency ratio; the Pareto front in green")
    rows = [[r["name"], f"{r['x']:.3f}", f"{r['top1']:.2f}", fmt_num(r["top5"], "{:.2f}"), fmt_num(r["before_ft"], "{:.2f}"),
             r["params"], "yes" if f else ""] for r, f in sorted(zip(runs, front), key=lambda t: t[0]["x"])]
    doc.table(["run", "latency ratio", "top-1 (%)", "top-5 (%)", "top-1 before fine-tuning", "params ratio",
               "Pareto"], rows)
    if notes:
        doc.para("Runs left out:")
        doc.bullets(notes)
    return path
