"""Bad input, every command: the corpus under tests/corpus/ (regenerate: python tests/corpus/make_corpus.py)
plus inputs made at test time (bad directories, bad datasets, unwritable output paths, symlinks), walked
against every command that accepts that kind of input.

Contract (DESIGN.md): exit code 2, one line on stderr naming the problem, no traceback, nothing left
behind. Safety: checkpoints load weights-only (a pickle carrying code is refused and never runs), no
model file executes code, output dirs and the SQLite store never follow a symlink out.

`OUTCOMES` counts tried / refused cleanly, read by bench/hardening_counts.py.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from graphs.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parent / "corpus"
OUTCOMES: Counter = Counter()
PWNED = Path("/tmp/compress-pwned")

ONNX_BAD = ["truncated.onnx", "random_bytes.onnx", "empty.onnx", "custom_op.onnx", "no_conv.onnx", "dynamic_spatial.onnx"]
PLANS_BAD = ["plan_wrong_version.json", "plan_other_model.json", "plan_not_json.json", "plan_bad_types.json"]
RECIPES_BAD = ["recipe_wrong_types.yaml", "recipe_not_yaml.yaml"]
# DIR inputs made at test time: (name, how to spoil a good prune directory)
DIRS_BAD = ["empty_dir", "truncated_model", "plan_wrong_version", "plan_other_model", "missing_weights",
            "weights_random_bytes", "summary_not_json", "not_a_dir"]
DATA_BAD = ["imagefolder:{T}/empty_data", "imagefolder:{T}/mislabelled", "imagefolder:{T}/missing", "npz:{C}/truncated.onnx",
            "nonsense:x"]
# Inputs some commands legitimately accept (analysis is allowed on any readable ONNX): exit 0, no traceback.
ACCEPTED = {("analyze", "custom_op.onnx"), ("analyze", "no_conv.onnx"), ("analyze", "dynamic_spatial.onnx"),

            # commands that do not read the spoiled file: report reads summary.json, build reads model.onnx
            *(("report", d) for d in ["truncated_model", "plan_wrong_version", "plan_other_model", "missing_weights",
                                      "weights_random_bytes"]),
            *(("build", d) for d in ["plan_wrong_version", "plan_other_model", "missing_weights", "weights_random_bytes",
                                     "summary_not_json"]),
            # plan.json's hash names the *source* model, which a DIR does not hold: nothing to compare it with
            ("verify", "plan_other_model")}
# single runs accepted: an MLP with no torch source is pruned from the graph alone (toolchain/onnx_only.py)
ACCEPTED_RUNS = {"compress prune {C}/no_conv.onnx --ratio 0.5 -o {T}/out"}
# accepted and slow (a real fine-tuning run): not walked
SKIPPED = {("finetune", "plan_other_model")}


def commands_available() -> set[str]:
    from toolchain.cli import app

    return {c.name or c.callback.__name__ for c in app.registered_commands}


AVAILABLE = commands_available()


def onnx_cases():
    for f in ONNX_BAD:
        src = f"{{C}}/{f}"
        yield "analyze", f, ["analyze", src]
        yield "analyze", f + " --json", ["analyze", src, "--json"]
        yield "prune", f, ["prune", src, "--ratio", "0.5", "-o", "{T}/out"]
        yield "prune", f + " --plan", ["prune", src, "--plan", "{T}/plan_ok.json", "-o", "{T}/out"]
        yield "profile", f, ["profile", src, "--store", "{T}/s.sqlite", "--runs", "1", "--points", "1"]
        yield "build", f, ["build", src, "--backend", "ort", "--precision", "fp32", "-o", "{T}/b.onnx"]
        yield "verify", f + " as DIR", ["verify", src]
        yield "report", f + " as DIR", ["report", src]
        yield "finetune", f + " as DIR", ["finetune", src, "--data", "digits", "--epochs", "1"]
    for f in PLANS_BAD:
        yield "prune", f, ["prune", "{R20}", "--plan", f"{{C}}/{f}", "-o", "{T}/out"]
    for f in RECIPES_BAD:
        yield "pipeline", f, ["pipeline", f"{{C}}/{f}"]
    for d in DIRS_BAD:
        yield "verify", d, ["verify", f"{{T}}/{d}"]
        yield "report", d, ["report", f"{{T}}/{d}"]
        yield "finetune", d, ["finetune", f"{{T}}/{d}", "--data", "digits", "--epochs", "1"]
        yield "build", d, ["build", f"{{T}}/{d}", "--backend", "ort", "--precision", "fp32", "-o", "{T}/b.onnx"]
    for data in DATA_BAD:
        yield "finetune", data, ["finetune", "{DIR}", "--data", data, "--epochs", "1"]
        yield "train", data, ["train", "builtin:resnet20", "--data", data, "--epochs", "1", "-o", "{T}/w.safetensors"]
        yield "build", "--calib " + data, ["build", "{DIR}", "--backend", "ort", "--precision", "int8", "--calib", data,
                                           "-o", "{T}/b.onnx"]
    for ckpt in ["pickle_with_code.pt", "torch_pickle_with_code.pt", "random_checkpoint.safetensors"]:
        yield "export", ckpt, ["export", "builtin:resnet20", "--checkpoint", f"{{T}}/{ckpt}", "-o", "{T}/x.onnx"]
    for spec in ["builtin:nope", "{T}/missing.py:factory", "{C}/truncated.onnx:factory", "torchvision:"]:
        yield "export", spec, ["export", spec, "-o", "{T}/x.onnx"]
    # output paths that cannot be written: under a regular file
    yield "export", "-o under a file", ["export", "builtin:resnet20", "-o", "{T}/afile/x.onnx"]
    yield "prune", "-o under a file", ["prune", "{R20}", "--ratio", "0.5", "-o", "{T}/afile/out"]
    yield "prune", "-o a file", ["prune", "{R20}", "--ratio", "0.5", "-o", "{T}/afile"]
    yield "profile", "--store under a file", ["profile", "{R20}", "--store", "{T}/afile/s.sqlite"]
    yield "build", "-o under a file", ["build", "{DIR}", "--backend", "ort", "--precision", "fp32", "-o", "{T}/afile/b.onnx"]
    yield "train", "-o under a file", ["train", "builtin:resnet20", "--data", "digits", "--epochs", "1", "-o", "{T}/afile/w.safetensors"]
    # symlinks out of the given place
    yield "prune", "-o symlink", ["prune", "{R20}", "--ratio", "0.5", "-o", "{T}/link"]
    yield "profile", "--store symlink", ["profile", "{R20}", "--store", "{T}/slink.sqlite"]
    yield "export", "-o symlink", ["export", "builtin:resnet20", "-o", "{T}/flink.onnx"]
    # a width floor out of range, without a budget to bound, or with layer mode (no widths to bound)
    for label, extra in [("--max-prune-ratio 1.5", ["--budget", "0.5", "--max-prune-ratio", "1.5"]),
                         ("--max-prune-ratio without --budget", ["--ratio", "0.5", "--max-prune-ratio", "0.5"]),
                         ("--max-prune-ratio --mode layer", ["--budget", "0.5", "--mode", "layer", "--max-prune-ratio", "0.5"]),
                         ("--max-prune-ratio-for without =", ["--budget", "0.5", "--max-prune-ratio-for", "layer1.*"]),
                         ("--max-prune-ratio-for 1.5", ["--budget", "0.5", "--max-prune-ratio-for", "layer1.*=1.5"]),
                         ("--max-prune-ratio-for no such group", ["--budget", "0.5", "--max-prune-ratio-for", "layer9.*=0"]),
                         ("--max-prune-ratio-for no such stride", ["--budget", "0.5", "--max-prune-ratio-for", "stride>=8=0"]),
                         ("--confirm -1", ["--budget", "0.5", "--confirm", "-1"]),
                         ("--max-prune-ratio-for without --budget", ["--ratio", "0.5", "--max-prune-ratio-for", "layer1.*=0"])]:
        yield "prune", label, ["prune", "{R20}", *extra, "--store", "{T}/s.sqlite", "-o", "{T}/out"]


CASES = [pytest.param(cmd, args, id=f"{cmd}[{label}]") for cmd, label, args in onnx_cases()]


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def pruned_dir(tmp_path_factory, resnet20_onnx):
    from graphs.deps import analyze
    from graphs.onnx_io import load_model
    from toolchain.prune import prune_to_dir, uniform_plan

    d = tmp_path_factory.mktemp("pruned") / "r20_pruned"
    prune_to_dir(str(resnet20_onnx), str(d), uniform_plan(analyze(load_model(resnet20_onnx)), 0.5))
    return d


def make_inputs(t: Path, good_dir: Path) -> None:
    """Inputs made at test time inside T (they exist before the snapshot, so they are not 'left behind')."""
    (t / "plan_ok.json").write_text(json.dumps({"version": 1, "channels": {"conv1": {"count": 2}}}))
    (t / "empty_dir").mkdir()
    for name in DIRS_BAD[1:-1]:
        shutil.copytree(good_dir, t / name)
    (t / "truncated_model" / "model.onnx").write_bytes((good_dir / "model.onnx").read_bytes()[:1000])
    plan = json.loads((good_dir / "plan.json").read_text())
    (t / "plan_wrong_version" / "plan.json").write_text(json.dumps({**plan, "version": 99}))
    (t / "plan_other_model" / "plan.json").write_text(json.dumps({**plan, "model": {**plan["model"], "onnx_sha256": "0" * 64}}))
    (t / "missing_weights" / "weights.safetensors").unlink()
    (t / "weights_random_bytes" / "weights.safetensors").write_bytes(os.urandom(300))
    (t / "summary_not_json" / "summary.json").write_text("{")
    (t / "not_a_dir").write_text("x")
    (t / "empty_data").mkdir()
    (t / "mislabelled" / "cat").mkdir(parents=True)
    (t / "mislabelled" / "dog").mkdir()
    (t / "mislabelled" / "dog" / "notes.txt").write_text("not an image")
    (t / "afile").write_text("a regular file where a directory is expected")
    shutil.copy(CORPUS / "pickle_with_code.pt", t)
    shutil.copy(CORPUS / "random_checkpoint.safetensors", t)
    torch_pickle_with_code(t / "torch_pickle_with_code.pt")
    outside = t.parent / (t.name + "_outside")
    outside.mkdir(exist_ok=True)
    (t / "link").symlink_to(outside)
    (t / "slink.sqlite").symlink_to(outside / "s.sqlite")
    (t / "flink.onnx").symlink_to(outside / "x.onnx")


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {PWNED}",))


def torch_pickle_with_code(path: Path) -> None:
    """A torch.save zip checkpoint whose pickle calls os.system when loaded without weights_only."""
    import torch

    torch.save({"conv1.weight": torch.zeros(1), "evil": _Payload()}, path)


def snapshot(*roots: Path) -> dict[str, int]:
    files = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            for n in dirnames + filenames:
                p = Path(dirpath) / n
                files[str(p)] = p.lstat().st_size if not p.is_dir() else -1
    return files


def fill(args, t, r20, d) -> list[str]:
    return [a.replace("{T}", str(t)).replace("{C}", str(CORPUS)).replace("{R20}", str(r20)).replace("{DIR}", str(d))
            for a in args]


def one_line_refusal(exit_code: int, stderr: str, stdout: str, what: str) -> None:
    assert "Traceback" not in stderr + stdout, f"{what}: traceback\n{stderr[-3000:]}"
    assert exit_code == 2, f"{what}: exit {exit_code}, expected 2\nstderr: {stderr[-1500:]}\nstdout: {stdout[-500:]}"
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"{what}: {len(lines)} lines on stderr, expected 1:\n{stderr}"
    assert lines[0].startswith("error:") and len(lines[0]) > len("error: ") + 10, f"{what}: {lines[0]!r}"


# ----------------------------------------------------------------------------- the corpus walk

@pytest.mark.parametrize("command,args", CASES)
def test_bad_input_refused_cleanly(command, args, tmp_path, resnet20_onnx, pruned_dir):
    if command not in AVAILABLE:
        pytest.skip(f"no `compress {command}`")
    if (command, Path(args[1]).name) in SKIPPED:
        pytest.skip("accepted input; a full fine-tuning run")
    from toolchain.cli import app

    t = tmp_path / "t"
    t.mkdir()
    make_inputs(t, pruned_dir)
    argv = fill(args, t, resnet20_onnx, pruned_dir)
    watched = (t, t.parent / (t.name + "_outside"), CORPUS, pruned_dir, resnet20_onnx.parent)
    before = snapshot(*watched)
    PWNED.unlink(missing_ok=True)
    OUTCOMES["tried"] += 1
    result = CliRunner().invoke(app, argv)
    stderr = result.stderr
    assert not PWNED.exists(), "a checkpoint executed code"
    label = "compress " + " ".join(args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        tb = "".join(traceback.format_exception(result.exception))
        pytest.fail(f"{label}: uncaught {type(result.exception).__name__}\n{tb[-3000:]}")
    input_name = Path(args[1]).name if len(args) > 1 else ""
    if (command, input_name) in ACCEPTED or (command, input_name.replace(" --json", "")) in ACCEPTED \
            or label in ACCEPTED_RUNS:
        assert result.exit_code == 0 and "Traceback" not in stderr, f"{label}: {result.exit_code} {stderr}"
        OUTCOMES["accepted"] += 1
        return
    one_line_refusal(result.exit_code, stderr, result.stdout, label)
    after = snapshot(*watched)
    left = sorted(set(after) - set(before))
    changed = sorted(k for k in before if k in after and before[k] != after[k])
    assert not left, f"{label}: left behind {left}"
    assert not changed, f"{label}: changed {changed}"
    OUTCOMES["refused cleanly"] += 1


# real processes: the same contract end to end, and --debug gives the traceback
SUBPROCESS_CASES = [
    ["analyze", "{C}/truncated.onnx"],
    ["prune", "{C}/random_bytes.onnx", "--ratio", "0.5", "-o", "{T}/out"],
    ["export", "builtin:resnet20", "--checkpoint", "{C}/pickle_with_code.pt", "-o", "{T}/x.onnx"],
    ["pipeline", "{C}/recipe_wrong_types.yaml"],
]


def run_cli(argv, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("COMPRESS_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "toolchain.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("args", SUBPROCESS_CASES, ids=lambda a: a[0])
def test_bad_input_subprocess(args, tmp_path, resnet20_onnx):
    PWNED.unlink(missing_ok=True)
    argv = fill(args, tmp_path, resnet20_onnx, tmp_path)
    before = snapshot(tmp_path)
    proc = run_cli(argv, tmp_path)
    one_line_refusal(proc.returncode, proc.stderr, proc.stdout, " ".join(args))
    assert snapshot(tmp_path) == before
    assert not PWNED.exists()


HALVES = """
import torch
from torch import nn

INPUT_SHAPE = (1, 3, 16, 16)


class Halves(nn.Module):
    \"\"\"Splits a conv's output in halves sized by a Python attribute no width rule knows.\"\"\"

    def __init__(self):
        super().__init__()
        self.cv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.half = 16
        self.a = nn.Conv2d(16, 8, 1)
        self.b = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        a, b = self.cv1(x).split((self.half, self.half), 1)
        return torch.cat([self.a(a), self.b(b)], 1)


def halves():
    return Halves()
"""


def _graph_file(path: Path, nodes, inits, opsets=(("", 17),)) -> Path:
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _issue11_case(case: str, t: Path) -> tuple[list[str], str, list[str]]:
    """(argv, what stderr must name, python prefix) for the deployment-model bad inputs of issue 11."""
    from onnx import helper, numpy_helper

    if case == "yolo_without_ultralytics":  # the package blocked in sys.modules: its import raises ImportError
        block = ("import runpy, sys; sys.modules['ultralytics'] = None; sys.argv = ['compress'] + sys.argv[1:]; "
                 "runpy.run_module('toolchain.cli', run_name='__main__')")
        return ["export", "ultralytics:yolov8n.yaml", "-o", f"{t}/y.onnx"], "pip install -e .[yolo]", ["-c", block]
    if case == "sync_fails":
        (t / "halves.py").write_text(HALVES)
        proc = run_cli(["export", f"{t}/halves.py:halves", "-o", f"{t}/halves.onnx"], t)
        assert proc.returncode == 0, proc.stderr
        return ["prune", f"{t}/halves.onnx", "--ratio", "0.5", "-o", f"{t}/out"], "into Halves", []
    if case == "no_initializers":
        path = _graph_file(t / "no_inits.onnx", [helper.make_node("Relu", ["x"], ["h"]),
                                                 helper.make_node("Sigmoid", ["h"], ["y"])], [])
        return ["prune", str(path), "--ratio", "0.3", "-o", f"{t}/out"], "no weight initializers", []
    w = numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Mystery", ["x"], ["a"], domain="x.custom"), helper.make_node("Conv", ["a", "w"], ["b"]),
             helper.make_node("Mystery", ["b"], ["y"], domain="x.custom")]
    path = _graph_file(t / "custom_everywhere.onnx", nodes, [w], (("", 17), ("x.custom", 1)))
    return ["prune", str(path), "--ratio", "0.3", "-o", f"{t}/out"], "no channel group can be pruned", []


@pytest.mark.parametrize("case", ["yolo_without_ultralytics", "sync_fails", "no_initializers", "unsupported_everywhere"])
def test_bad_input_subprocess_deployment_models(case, tmp_path):
    argv, named, prefix = _issue11_case(case, tmp_path)
    before = snapshot(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("COMPRESS_DEBUG", None)
    cmd = [sys.executable, *prefix, *argv] if prefix else [sys.executable, "-m", "toolchain.cli", *argv]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    one_line_refusal(proc.returncode, proc.stderr, proc.stdout, f"{case}: compress {' '.join(argv)}")
    assert named in proc.stderr, proc.stderr
    if case == "sync_fails":  # the refusal names the module type and the attribute
        assert "attributes half" in proc.stderr, proc.stderr
    assert snapshot(tmp_path) == before  # nothing written, not even a temporary file


def test_debug_shows_traceback(tmp_path):
    proc = run_cli(["--debug", "analyze", str(CORPUS / "truncated.onnx")], tmp_path)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


# ----------------------------------------------------------------------------- API-level checks on the corpus

def test_custom_op_analysis_and_refusal():
    from graphs.deps import analyze
    from graphs.onnx_io import load_model
    from graphs.plan import Plan
    from graphs.surgery import apply_plan

    analysis = analyze(load_model(CORPUS / "custom_op.onnx"))
    group = analysis.group("conv1")
    assert not group.prunable and "Mystery" in group.reason
    with pytest.raises(InputError, match="cannot be pruned: unsupported op Mystery"):
        apply_plan(analysis.model, Plan(channels={"conv1": {"count": 2}}), analysis=analysis)


def test_corpus_is_small():
    assert sum(p.stat().st_size for p in CORPUS.iterdir()) < 2_000_000


# ----------------------------------------------------------------------------- safety

def test_checkpoint_loading_is_weights_only(tmp_path):
    """A pickle carrying code is refused by every loader and never runs (zoo and fine-tune resume)."""
    import torch

    from toolchain.zoo import build_model

    path = tmp_path / "evil.pt"
    torch_pickle_with_code(path)
    PWNED.unlink(missing_ok=True)
    with pytest.raises(InputError, match="weights-only|not a torch checkpoint|unreadable"):
        build_model("builtin:resnet20", checkpoint=str(path))
    assert not PWNED.exists()
    for f in sorted((ROOT / "toolchain").rglob("*.py")) + sorted((ROOT / "calib").rglob("*.py")):
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{f.relative_to(ROOT)}:{n}: torch.load without weights_only=True"
            assert "pickle.load" not in line, f"{f.relative_to(ROOT)}:{n}: pickle.load"


def test_only_explicit_factory_specs_run_code(tmp_path):
    """Model files never execute code: ONNX metadata naming a .py spec is not imported by prune."""
    from graphs.onnx_io import load_model
    from toolchain.zoo import parse_model_spec  # noqa: F401  (the spec grammar exists)

    evil = tmp_path / "evil.py"
    evil.write_text(f"import pathlib\npathlib.Path({str(PWNED)!r}).touch()\ndef factory():\n    raise SystemExit\n")
    model = onnx.load(str(CORPUS / "custom_op.onnx"))
    entry = model.metadata_props.add()
    entry.key, entry.value = "compress.spec", f"{evil}:factory"
    onnx.save(model, str(tmp_path / "m.onnx"))
    PWNED.unlink(missing_ok=True)
    from toolchain.cli import app

    result = CliRunner().invoke(app, ["analyze", str(tmp_path / "m.onnx"), "--json"])
    assert result.exit_code == 0
    assert not PWNED.exists(), "analyze executed code named by a model file"
    load_model(tmp_path / "m.onnx")
    assert not PWNED.exists()


def test_regression_prune_output_symlink_not_followed(tmp_path, resnet20_onnx):
    """Bug: prune_to_dir resolved -o before checking for a symlink, so `-o LINK` wrote through it."""
    from graphs.plan import Plan
    from toolchain.prune import prune_to_dir

    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "link").symlink_to(outside)
    with pytest.raises(InputError, match="symlink"):
        prune_to_dir(str(resnet20_onnx), str(tmp_path / "link"), Plan())
    assert list(outside.iterdir()) == []


def test_regression_outputs_have_umask_permissions(tmp_path, resnet20_onnx):
    """Bug: DIR and its files were 0700/0600 (mkdtemp/mkstemp modes), not the user's umask."""
    from graphs.plan import Plan
    from toolchain.export import export_spec
    from toolchain.prune import prune_to_dir

    mask = os.umask(0o022)
    try:
        prune_to_dir(str(resnet20_onnx), str(tmp_path / "out"), Plan())
        export_spec("builtin:resnet20", str(tmp_path / "x.onnx"))
    finally:
        os.umask(mask)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
    for f in ["model.onnx", "plan.json", "weights.safetensors", "summary.json"]:
        assert (tmp_path / "out" / f).stat().st_mode & 0o777 == 0o644, f
    assert (tmp_path / "x.onnx").stat().st_mode & 0o777 == 0o644


def test_regression_export_under_a_file_is_input_error(tmp_path):
    """Bug: `compress export -o FILE/x.onnx` crashed with FileExistsError (exit 1, traceback)."""
    from toolchain.export import export_spec

    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="cannot write there"):
        export_spec("builtin:resnet20", str(tmp_path / "afile" / "x.onnx"))


def test_regression_profile_leaves_no_store_for_refused_model(tmp_path):
    """Bug: profile created the SQLite store before onnxruntime refused the model (custom op), and a model
    with nothing to measure gave exit 0 with base_ms NaN."""
    from toolchain.latency.config import ProfileConfig
    from toolchain.latency.lut import profile

    for name in ["custom_op.onnx", "no_conv.onnx", "dynamic_spatial.onnx"]:
        store = tmp_path / f"{name}.sqlite"
        with pytest.raises(InputError):
            profile(str(CORPUS / name), str(store), ProfileConfig(runs=1, points=1))
        assert not store.exists()


def test_regression_dir_with_bad_files_is_input_error(tmp_path, pruned_dir):
    """Bugs: verify/finetune crashed (traceback) on DIR/weights.safetensors of random bytes
    (SafetensorError) and on a DIR/summary.json that is not JSON (JSONDecodeError)."""
    from toolchain.pruned_dir import load_pruned_module

    for name, content in [("weights.safetensors", os.urandom(300)), ("summary.json", b"{")]:
        d = tmp_path / name
        shutil.copytree(pruned_dir, d)
        (d / name).write_bytes(content)
        with pytest.raises(InputError, match=name.replace(".", r"\.")):
            load_pruned_module(d)


def test_regression_train_unwritable_output_refused_before_training(tmp_path):
    """Bug: `compress train -o FILE/w.safetensors` trained for the whole run, then crashed with FileExistsError."""
    from toolchain.baseline import train_baseline
    from toolchain.train import TrainConfig

    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="cannot write there"):
        train_baseline("builtin:resnet20", "no-such-data:x", str(tmp_path / "afile" / "w.safetensors"),
                       TrainConfig(epochs=1))


def test_regression_pickle_warning_not_on_stderr(tmp_path, capfd):
    """Bug: torch's 'pickle protocol' UserWarning put two extra lines before the one-line refusal."""
    from toolchain.zoo import build_model

    with pytest.raises(InputError):
        build_model("builtin:resnet20", checkpoint=str(CORPUS / "pickle_with_code.pt"))
    assert "UserWarning" not in capfd.readouterr().err


def test_profile_refusal_is_exactly_one_line(tmp_path):
    from toolchain.cli import app

    result = CliRunner().invoke(app, ["profile", str(CORPUS / "custom_op.onnx"), "--store", str(tmp_path / "s.sqlite")])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1, repr(result.stderr)
