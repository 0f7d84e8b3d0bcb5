"""The recipe is validated with errors that name the key; the pipeline skips finished stages."""
import json
import textwrap

import pytest
from typer.testing import CliRunner

from graphs.errors import InputError
from toolchain.cli import app
from toolchain.recipe import load_recipe

BASE = """
model: builtin:resnet20
input_shape: [1, 3, 32, 32]
data: digits
out: {out}
prune: {{budget: 0.7, mode: layer, criterion: l1, scores: ["mean:l2"]}}
profile: {{points: 1, runs: 3}}
finetune: {{epochs: 1}}
report: false
"""


def write(tmp_path, text, **fmt):
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent(text).format(**fmt) if fmt else text)
    return path


@pytest.mark.parametrize("extra, fragment", [
    ("prune: {budget: 0.5, mdoe: joint}\n", "prune.mdoe: extra inputs are not permitted"),
    ("prune: {budget: 2}\n", "prune.budget: input should be less than or equal to 1"),
    ("prune: {budget: 0.5, mode: sideways}\n", "prune.mode"),
    ("prune: {budget: 0.5, max_prune_ratio: 0}\n", "prune.max_prune_ratio: input should be greater than 0"),
    ("prune: {budget: 0.5, confirm: -1}\n", "prune.confirm: input should be greater than or equal to 0"),
    ("finetune: {epochs: many}\n", "finetune.epochs"),
    ("profile: {precision: fp8}\n", "profile.precision"),
    ("profile: {batch: 0}\n", "profile.batch: input should be greater than or equal to 1"),
    ("colour: blue\n", "colour: extra inputs are not permitted"),
])
def test_recipe_errors_name_the_key(tmp_path, extra, fragment):
    lines = [l for l in BASE.format(out=tmp_path / "o").splitlines()
             if not l.startswith(extra.split(":")[0] + ":")]
    path = write(tmp_path, "\n".join(lines) + "\n" + extra)
    with pytest.raises(InputError, match=fragment.replace("(", r"\(")):
        load_recipe(path)


def test_recipe_profile_names_where_the_budget_is_measured(tmp_path):
    """provider, precision and batch reach the latency config, so a recipe meets its budget on a GPU as
    `compress prune --backend torch --provider cuda --precision fp16 --batch 8` does."""
    from toolchain.pipeline import _profile_config

    text = BASE.replace("profile: {{points: 1, runs: 3}}",
                        "profile: {{backend: torch, provider: cuda, precision: fp16, batch: 8, points: 1, runs: 3}}")
    config = _profile_config(load_recipe(write(tmp_path, text, out=tmp_path / "o")))
    assert (config.backend, config.provider, config.precision, config.batch) == ("torch", "cuda", "fp16", 8)
    assert config.protocol.endswith("-cuda")  # a table timed on the GPU is never mistaken for a CPU one
    default = _profile_config(load_recipe(write(tmp_path, BASE, out=tmp_path / "o")))
    assert (default.backend, default.provider, default.precision, default.batch) == ("ort", None, "fp32", 1)


def test_a_backend_this_host_lacks_fails_before_training(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has a GPU: the recipe would run")
    out = tmp_path / "o"
    text = BASE.replace("profile: {{points: 1, runs: 3}}", "profile: {{backend: torch, provider: cuda}}")
    text = text.replace("data: digits", "data: digits\ntrain: {{epochs: 50}}")
    result = CliRunner().invoke(app, ["pipeline", str(write(tmp_path, text, out=out))])
    assert result.exit_code == 2 and "torch sees no GPU" in result.stderr and "Traceback" not in result.output
    assert not (out / "baseline.safetensors").exists()  # the 50 training epochs never started


def test_cli_recipe_error_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["pipeline", str(write(tmp_path, "model: [1, 2]\n"))])
    assert result.exit_code == 2 and "model" in result.stderr and "Traceback" not in result.output


def test_pipeline_runs_and_rerun_skips(tmp_path):
    out = tmp_path / "run"
    recipe = write(tmp_path, BASE, out=out)
    runner = CliRunner()
    first = runner.invoke(app, ["pipeline", str(recipe), "--json"])
    assert first.exit_code == 0, first.output
    results = json.loads(first.stdout)
    assert set(results) == {"export", "profile", "prune", "finetune"}
    control = results["profile"]["control"]  # the profiling session's check of its reference
    assert control["ratio"] > 0 and control["end"]["ratio"] > 0  # timed before and after the entries
    assert (control["applied"] or not control["steady"]) == (control["warning"] is not None)
    assert (out / "pruned" / "model.onnx").is_file() and (out / "pruned" / "train.json").is_file()
    assert json.loads((out / "pruned" / "scores.json").read_text())["criteria"]["mean:l2"]
    again = runner.invoke(app, ["pipeline", str(recipe)])
    assert again.exit_code == 0 and again.stderr.count("finished earlier, skipped") == 4
    # changing the budget redoes prune and what follows it, not export or profile
    recipe.write_text(recipe.read_text().replace("budget: 0.7", "budget: 0.8"))
    third = runner.invoke(app, ["pipeline", str(recipe)])
    assert third.exit_code == 0, third.output
    assert "[export] finished earlier" in third.stderr and "[prune] running" in third.stderr
    assert "[finetune] running" in third.stderr


@pytest.mark.parametrize("stages", [1, 2])
def test_recipe_stages_fine_tune_between_stages(tmp_path, monkeypatch, stages):
    """A recipe with prune.stages > 1 hands refine the same between-stages fine-tuning as the CLI."""
    import toolchain.refine
    from toolchain.pipeline import _prune

    floor = "max_prune_ratio: 0.75, max_prune_ratio_for: {{'stride<=1': 0.5}}, confirm: 3," if stages == 2 else ""
    recipe = load_recipe(write(tmp_path, BASE.replace("criterion: l1,", f"criterion: l1, stages: {stages}, {floor}"),
                               out=tmp_path / "o"))
    seen = {}

    class Stop(Exception):
        pass

    def capture(onnx_path, out_dir, request, *args, **kwargs):
        seen["request"] = request
        raise Stop

    monkeypatch.setattr(toolchain.refine, "prune_to_budget", capture)
    with pytest.raises(Stop):
        _prune(recipe, tmp_path / "m.onnx", tmp_path / "pruned", tmp_path / "s.sqlite", None, (1, 3, 32, 32),
               tmp_path, None, lambda m: None)
    request = seen["request"]
    assert request.stages == stages
    assert request.max_prune == (0.75 if stages == 2 else 1.0)  # the recipe's width floor reaches the solver
    assert request.max_prune_for == ({"stride<=1": 0.5} if stages == 2 else {})  # format()'s braces, above
    assert request.confirm == (3 if stages == 2 else 1)
    if stages == 1:
        assert request.between_stages is None
    else:
        hook = request.between_stages
        assert callable(hook) and hook.__qualname__.startswith("finetune_between_stages")


def test_recipe_mode_auto_hands_every_mode_the_held_out_split(tmp_path, monkeypatch):
    """prune.mode auto: the pipeline calls toolchain.refine_modes with the recipe's request and its data's
    held-out (val) split as the score, as `prune --mode auto --data` does."""
    import toolchain.refine_modes
    from toolchain.data import make_loader
    from toolchain.pipeline import _prune

    recipe = load_recipe(write(tmp_path, BASE.replace("mode: layer", "mode: auto, bn_batches: 4, auto_tune_batches: 5"), out=tmp_path / "o"))
    seen = {}

    class Stop(Exception):
        pass

    def capture(onnx_path, out_dir, request, store, config, score_loader, progress=None, tune_loader=None,
                tune_batches=0):
        seen.update(request=request, scores=score_loader, tune=tune_loader, tune_batches=tune_batches)
        raise Stop

    monkeypatch.setattr(toolchain.refine_modes, "prune_best_mode", capture)
    with pytest.raises(Stop):
        _prune(recipe, tmp_path / "m.onnx", tmp_path / "pruned", tmp_path / "s.sqlite", None, (1, 3, 32, 32),
               tmp_path, None, lambda m: None)
    assert seen["request"].bn_batches == 4 and seen["request"].loader is not None
    val = make_loader("digits", (1, 3, 32, 32), "val", 256, seed=recipe.seed).dataset
    assert len(seen["scores"].dataset) == len(val)  # digits' val split is under 2,048 images: all of it
    # the short fine-tune's data: the train split, augmented as training is
    assert seen["tune_batches"] == 5 and seen["tune"].dataset.augment
