"""The CLI contracts: exit codes, one-line errors without tracebacks, JSON shapes, no half-written DIR."""
import json
import sqlite3
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from toolchain.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_bad_input(result, fragment, progress_lines=False):
    """Exit 2, one line naming the problem, no traceback (long jobs may log progress before it)."""
    assert result.exit_code == 2, result.output
    lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("error:")]
    assert "Traceback" not in result.output, result.output
    assert (len(errors) == 1 and lines[-1] == errors[0]) if progress_lines else len(lines) == 1, result.stderr
    assert fragment in result.stderr, result.stderr


def test_analyze_json_contract(resnet20_onnx):
    result = invoke("analyze", resnet20_onnx, "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert {"id", "channels", "prunable", "reason", "members"} <= set(data["groups"][0])
    assert {"id", "kind", "members"} <= set(data["blocks"][0])
    ids = [g["id"] for g in data["groups"]]
    assert ids[:2] == ["input", "conv1"] and "layer1.0.conv1" in ids
    assert [b["id"] for b in data["blocks"]][:3] == ["layer1.0", "layer1.1", "layer1.2"]
    stride = {g["id"]: g["stride"] for g in data["groups"]}  # what `--max-prune-ratio-for 'stride<=N=R'` reads
    assert stride["input"] is None and stride["conv1"] == 1 and stride["layer2.0.conv1"] == 2
    assert stride["layer3.0.conv1"] == 4


def test_prune_ratio_then_verify(resnet20_onnx, tmp_path):
    out = tmp_path / "out"
    result = invoke("prune", resnet20_onnx, "--ratio", "0.5", "--round-to", "8", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["params"]["after"] < 0.5 * summary["params"]["before"]
    assert {p.name for p in out.iterdir()} == {"model.onnx", "plan.json", "weights.safetensors", "summary.json"}
    plan = json.loads((out / "plan.json").read_text())
    assert plan["version"] == 1 and all(len(c["keep"]) % 8 == 0 for c in plan["channels"].values())
    result = invoke("verify", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] is True


def test_verify_fails_with_exit_1_when_weights_differ(resnet20_onnx, tmp_path):
    from safetensors.torch import load_file, save_file

    out = tmp_path / "out"
    assert invoke("prune", resnet20_onnx, "--ratio", "0.25", "-o", out).exit_code == 0
    state = load_file(str(out / "weights.safetensors"))
    state["layer2.1.conv1.weight"] = state["layer2.1.conv1.weight"] * 1.5
    save_file(state, str(out / "weights.safetensors"))
    result = invoke("verify", out)
    assert result.exit_code == 1 and "FAIL" in result.stdout


def write_plan(path, **fields):
    plan = {"version": 1, "channels": {}, "remove": []}
    plan.update(fields)
    path.write_text(json.dumps(plan))
    return path


@pytest.mark.parametrize("fields, fragment", [
    ({"channels": {"no.such.group": {"count": 4}}}, "unknown channel group 'no.such.group'"),
    ({"remove": ["layer9.9"]}, "unknown block 'layer9.9'"),
    ({"channels": {"conv1": {"count": 999}}}, "count is 999"),
    ({"channels": {"input": {"count": 1}}}, "cannot be pruned: graph input"),
    ({"model": {"onnx_sha256": "0" * 64}}, "made for another model"),
    ({"version": 7}, "plan version 7"),
    ({"chanels": {}}, "unknown plan key(s): chanels"),
])
def test_bad_plans_exit_2_and_write_nothing(resnet20_onnx, tmp_path, fields, fragment):
    plan = write_plan(tmp_path / "plan.json", **fields)
    out = tmp_path / "out"
    assert_bad_input(invoke("prune", resnet20_onnx, "--plan", plan, "-o", out), fragment)
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_bad_model_files(tmp_path, resnet20_onnx):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(resnet20_onnx.read_bytes()[:5000])
    assert_bad_input(invoke("analyze", truncated), "not a readable ONNX model")
    text = tmp_path / "notes.onnx"
    text.write_text("hello, I am not a model")
    assert_bad_input(invoke("prune", text, "--ratio", "0.3", "-o", tmp_path / "o"), str(text))
    assert_bad_input(invoke("analyze", tmp_path / "missing.onnx"), "no such file")


def test_option_errors(resnet20_onnx, tmp_path):
    assert_bad_input(invoke("prune", resnet20_onnx, "-o", tmp_path / "o"), "exactly one of --plan, --ratio or --budget")
    assert_bad_input(invoke("prune", resnet20_onnx, "--ratio", "1.5", "-o", tmp_path / "o"), "--ratio must be in [0, 1)")
    assert_bad_input(invoke("verify", tmp_path), "no plan.json")
    assert_bad_input(invoke("export", "nosuch:thing", "-o", tmp_path / "x.onnx"), "nosuch")


def test_checkpoint_that_does_not_fit(tmp_path):
    import torch

    torch.save({"conv1.weight": torch.zeros(3, 3, 3, 3)}, tmp_path / "bad.pt")
    result = invoke("export", "builtin:resnet20", "-o", tmp_path / "m.onnx", "--checkpoint", tmp_path / "bad.pt")
    assert_bad_input(result, "bad.pt")
    assert not (tmp_path / "m.onnx").exists()


def test_real_process_exit_code_and_no_traceback(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(bytes(range(256)) * 4)
    proc = subprocess.run([sys.executable, "-m", "toolchain.cli", "analyze", str(junk)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, fragment", [
    (["--budget", "1.5"], "--budget must be in (0, 1]"),
    (["--budget", "0"], "--budget must be in (0, 1]"),
    (["--budget", "0.5", "--criterion", "nope"], "unknown filter criterion 'nope'"),
    (["--budget", "0.5", "--criterion", "taylor"], "criterion taylor needs data"),
    (["--budget", "0.5", "--mode", "layer", "--layer-criterion", "imprinting"], "criterion imprinting needs data"),
    (["--budget", "0.5", "--mode", "sideways"], "unknown mode 'sideways'"),
])
def test_budget_bad_input_before_any_profiling(resnet20_onnx, tmp_path, args, fragment):
    store = tmp_path / "lut.sqlite"
    result = invoke("prune", resnet20_onnx, "-o", tmp_path / "o", "--store", store, *args)
    assert_bad_input(result, fragment)
    assert not store.exists() and not (tmp_path / "o").exists()


def test_impossible_budget_names_the_smallest_reachable(resnet20_onnx, tmp_path):
    """The budget is set below what this run's own table says removing every helpful block reaches, so
    it is impossible whatever the host's load did to the measurements, and the refusal names that value."""
    from graphs.deps import analyze
    from graphs.onnx_io import load_model
    from toolchain.latency.config import ProfileConfig, resolve_round_to
    from toolchain.latency.lut import profile
    from toolchain.latency.predict import Predictor

    store = tmp_path / "lut.sqlite"
    table = profile(str(resnet20_onnx), str(store), resolve_round_to(ProfileConfig(runs=3)))  # what prune reuses
    with sqlite3.connect(store) as db:
        measured = db.execute("SELECT COUNT(*), MAX(created_at) FROM measurements").fetchone()
    analysis = analyze(load_model(resnet20_onnx))
    helpful = [b for b in analysis.blocks if table.blocks[b.id] < 1.0]  # resnet20's blocks are disjoint
    smallest = Predictor(table, analysis, analysis.blocks).predict({}, helpful).corrected
    result = invoke("prune", resnet20_onnx, "-o", tmp_path / "o", "--store", store, "--budget", f"{smallest / 2:.4f}",
                    "--mode", "layer", "--criterion", "l1", "--runs", "3")
    assert_bad_input(result, f"below the smallest latency layer pruning reaches here: {smallest:.3f} of the unpruned",
                     progress_lines=True)
    with sqlite3.connect(store) as db:  # prune reused the table: not one entry timed again
        assert db.execute("SELECT COUNT(*), MAX(created_at) FROM measurements").fetchone() == measured
    assert not (tmp_path / "o").exists()


def test_budget_at_a_batch_size_times_everything_at_it(resnet20_onnx, tmp_path):
    """--batch B: the budget is about batch B, so the table and the plans are timed at it (a GPU deployment
    at batch 8 is another device than at batch 1), never at the default."""
    store = tmp_path / "lut.sqlite"
    result = invoke("prune", resnet20_onnx, "-o", tmp_path / "o", "--store", store, "--budget", "0.8", "--batch", "2",
                    "--mode", "layer", "--criterion", "l1", "--runs", "3", "--json")
    assert result.exit_code == 0, result.output
    with sqlite3.connect(store) as db:
        assert {r[0] for r in db.execute("SELECT DISTINCT batch FROM measurements")} == {2}
    latency = json.loads((tmp_path / "o" / "summary.json").read_text())["latency"]  # the output says what it is about
    assert {k: latency[k] for k in ("backend", "provider", "precision", "batch")} == {
        "backend": "ort", "provider": None, "precision": "fp32", "batch": 2}
    assert_bad_input(invoke("prune", resnet20_onnx, "-o", tmp_path / "p", "--store", store, "--budget", "0.8",
                            "--batch", "0"), "--batch must be >= 1")
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("command", ["prune", "finetune", "train", "build"])
def test_data_options_list_every_data_form_the_parser_accepts(command):
    """--data / --calib help comes from the parser's own list, so a new source (fashion-mnist) shows everywhere."""
    from toolchain.data_sources import SPEC_FORMS

    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "2000", "TERMINAL_WIDTH": "2000"})
    assert result.exit_code == 0, result.output
    missing = [form for form in SPEC_FORMS if form not in result.output]
    assert not missing, f"{command} --help does not list {missing}"
