"""Grouped convs on the CPU's blocked kernels: which per-group widths are faster (ORT CPU, batch 1).

regnet_y_800mf's grouped convs have 16 channels per group (one AVX-512 channel block), in and out.
This narrows every grouped conv of one group count (20 groups, then 9, ...) to k channels per group
at once and measures the model interleaved with the unpruned one, three ways: the conv's input side
only (the 1x1 conv feeding it), its output side only (the conv itself, its SE and the 1x1 conv after
it), and both sides at the same positions. Two product rules come from this run:
graphs/alignment.py allows per-group widths that divide the block (8, 4, ...; a width like 12 falls
off the blocked kernels), and graphs/rules.py ties the two sides of such a conv (one side alone was
slower than both, or than leaving the conv whole).

    python bench/grouped_alignment.py [--model torchvision:regnet_y_800mf] [--widths 12,8,4]
                                      [--sides in,out,both] [--runs 40] [--log PATH|-]

Writes bench/results/grouped_alignment.txt (date, commit, command line and load on top).
"""
import argparse
import tempfile
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import onnx  # noqa: E402

from benchlog import logged  # noqa: E402
from graphs.deps import analyze  # noqa: E402
from graphs.onnx_io import load_model  # noqa: E402
from graphs.plan import Plan  # noqa: E402
from graphs.surgery import apply_plan  # noqa: E402
from toolchain.export import export_spec  # noqa: E402
from toolchain.latency.backends import get_backend  # noqa: E402
from toolchain.latency.measure import interleaved_ratio  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="torchvision:regnet_y_800mf")
    parser.add_argument("--widths", default="12,8,4", help="channels per group to keep")
    parser.add_argument("--sides", default="in,out,both", help="which side of the grouped convs to narrow")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--log", default=None, help="log file (default bench/results/grouped_alignment.txt; - for none)")
    args = parser.parse_args()
    with logged("grouped_alignment", args.log), tempfile.TemporaryDirectory() as tmp:
        run(args, Path(tmp))


def _side(analysis, group, grouped: set[str]) -> str:
    """Which side of the grouped convs a group is: "in", "out" or "both" (tied by the analysis)."""
    roles = {sl.role for sl in analysis.slices if sl.node in grouped and sl.role in ("in", "out")
             and analysis.group_of(sl.ids[0]) is group}
    return "both" if roles == {"in", "out"} else next(iter(roles), "none")


def run(args, work: Path) -> None:
    reference = work / "model.onnx"
    export_spec(args.model, str(reference))
    model = load_model(reference)
    analysis = analyze(model, tie_grouped_sides=False)  # the sides apart: "both" narrows the two together
    grouped = {n.name for n in model.graph.node if n.op_type == "Conv"
               and next((a.i for a in n.attribute if a.name == "group"), 1) > 1}
    by_count: dict[int, list] = {}
    for g in analysis.groups:  # a grouped conv's unit is one channel in each of `multiplicity` groups
        if g.prunable and g.multiplicity > 1:
            by_count.setdefault(g.multiplicity, []).append(g)
    backend = get_backend("ort", spinning=False)
    for count, groups in sorted(by_count.items(), reverse=True):
        for side in args.sides.split(","):
            chosen = [g for g in groups if side == "both" or _side(analysis, g, grouped) == side]
            for k in (int(w) for w in args.widths.split(",")):
                if not chosen or k >= chosen[0].channels:
                    continue
                plan = Plan(channels={g.id: {"keep": list(range(k))} for g in chosen}, round_to=1)
                pruned, _ = apply_plan(model, plan, analysis=analysis, check=False)
                path = work / f"g{count}-{side}-k{k}.onnx"
                onnx.save(pruned, str(path))
                with backend.prepare(str(reference)) as ref, backend.prepare(str(path)) as cand:
                    res = interleaved_ratio(cand, ref, warmup=3, runs=args.runs)
                print(f"{count}-group convs, {side:4s} side(s) ({len(chosen)} groups of {chosen[0].channels} channels "
                      f"per conv group): {k}/{chosen[0].channels} per group measured {res.ratio:.3f} +- "
                      f"{res.ratio_se:.3f} ({res.candidate.median:.2f} vs {res.reference.median:.2f} ms)", flush=True)


if __name__ == "__main__":
    main()
