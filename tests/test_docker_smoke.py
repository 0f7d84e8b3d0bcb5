"""docker/smoke_imports.py, the images' build-time smoke test, run here on the same code.

It must cover every first-party module a real `compress pipeline` (with a build stage) and a real
`compress build` load (measured: the commands run in a subprocess that records sys.modules; -m slow),
fail on a broken import reached only lazily, and the Jetson requirements must hold every runtime
dependency.
"""
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "docker" / "smoke_imports.py"
OURS = ("toolchain", "graphs", "calib")

# runs the CLI in-process and writes the first-party modules it loaded to argv[1] at exit
RECORD = """
import atexit, json, sys
out = sys.argv[1]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(
    m for m in sys.modules if m.split(".")[0] in %r))))
sys.argv = ["compress"] + sys.argv[2:]
from toolchain.cli import main
main()
""" % (OURS,)


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}


def _smoke(*args, cwd=ROOT):
    proc = subprocess.run([sys.executable, str(SMOKE), *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=300)
    return proc


def _loaded_by(tmp_path, *argv) -> set[str]:
    record = tmp_path / f"loaded-{argv[0]}.json"
    proc = subprocess.run([sys.executable, "-c", RECORD, str(record), *argv], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(json.loads(record.read_text()))


@pytest.fixture(scope="module")
def smoke_report():
    proc = _smoke("--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.mark.slow  # a real pipeline and build: minutes on the shared 2-core machine
def test_smoke_covers_what_pipeline_and_build_load(smoke_report, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(textwrap.dedent(f"""
        model: builtin:resnet20
        input_shape: [1, 3, 32, 32]
        data: digits
        out: {tmp_path / 'run'}
        prune: {{budget: 0.7, mode: layer, criterion: l1, scores: ["mean:l2"]}}
        profile: {{points: 1, runs: 3}}
        train: {{epochs: 1}}
        finetune: {{epochs: 1}}
        build: {{backend: ort, precision: int8}}
        report: true
        """))
    loaded = _loaded_by(tmp_path, "pipeline", str(recipe))
    pruned = next((tmp_path / "run").rglob("plan.json")).parent
    loaded |= _loaded_by(tmp_path, "build", str(pruned), "--precision", "int8", "--calib", "digits",
                         "-o", str(tmp_path / "m.int8.onnx"))
    assert {"toolchain.pipeline", "toolchain.build", "calib.qdq"} <= loaded  # the commands really ran
    missed = loaded - set(smoke_report["first_party"])
    assert not missed, f"modules the commands load that the smoke test never imports: {sorted(missed)}"
    assert set(smoke_report["first_party"]) <= set(smoke_report["imported"])


def test_smoke_reaches_lazy_imports_and_registry_strings(smoke_report):
    # nothing imports these at module level from the roots: a walk of top-level imports misses them
    lazy = {"toolchain.baseline", "toolchain.latency.lut", "calib.qdq",
            "toolchain.latency.backends.ort", "toolchain.latency.backends.torch_backend"}
    assert lazy <= set(smoke_report["first_party"])
    third = set(smoke_report["third_party"])
    assert {"torch", "onnx", "yaml", "pydantic", "timm"} <= {m.split(".")[0] for m in third}
    assert "onnxruntime.quantization" in third  # imported inside calib.qdq's functions
    assert "tensorrt" in smoke_report["optional"]  # the trt extra: absent here, required in the images


def _fake_repo(tmp_path, lazy_body: str) -> Path:
    repo = tmp_path / "repo"
    (repo / "docker").mkdir(parents=True)
    pkg = repo / "fakepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "entry.py").write_text(textwrap.dedent("""
        REGISTRY = {"x": ("fakepkg.registered", "Thing")}

        def run():
            from fakepkg import deep   # only inside a function
            return deep.VALUE
        """))
    (pkg / "deep.py").write_text("VALUE = 1\n\ndef later():\n" + textwrap.indent(lazy_body, "    ") + "\n")
    (pkg / "registered.py").write_text("class Thing:\n    pass\n")
    return repo


def test_smoke_fails_on_a_broken_import_reached_only_lazily(tmp_path):
    repo = _fake_repo(tmp_path, "import no_such_module_for_smoke\nreturn no_such_module_for_smoke")
    proc = _smoke("--repo", str(repo), "--root", "fakepkg.entry", "--json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout
    report = json.loads(proc.stdout)
    assert {"fakepkg.entry", "fakepkg.deep", "fakepkg.registered"} <= set(report["first_party"])
    assert any(f.startswith("no_such_module_for_smoke:") for f in report["failures"])


def test_smoke_checks_imported_names_and_tolerates_guarded_optional_imports(tmp_path):
    body = textwrap.dedent("""
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:  # never runs: not imported
            import type_only_module_for_smoke
        try:
            import optional_module_for_smoke
        except ImportError:
            optional_module_for_smoke = None
        from json import no_such_function_for_smoke
        """)
    repo = _fake_repo(tmp_path, body)
    proc = _smoke("--repo", str(repo), "--root", "fakepkg.entry", "--json", cwd=tmp_path)
    report = json.loads(proc.stdout)
    assert report["optional"] == ["optional_module_for_smoke"]
    assert report["failures"] == []  # json is stdlib: not checked; the TYPE_CHECKING import never runs
    assert proc.returncode == 0
    body = "from numpy import no_such_function_for_smoke\n"
    repo2 = _fake_repo(tmp_path / "b", body)
    proc = _smoke("--repo", str(repo2), "--root", "fakepkg.entry", "--json", cwd=tmp_path)
    assert proc.returncode == 1
    assert any("numpy: no no_such_function_for_smoke" in f for f in json.loads(proc.stdout)["failures"])
    # a module named with --require must import, optional or not
    proc = _smoke("--repo", str(repo), "--root", "fakepkg.entry", "--require", "optional_module_for_smoke",
                  cwd=tmp_path)
    assert proc.returncode == 1 and "FAILED optional_module_for_smoke" in proc.stdout


def _name(req: str) -> str:
    return re.split(r"[ ;<>=!~\[]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_jetson_requirements_hold_every_runtime_dependency():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = (ROOT / "docker" / "requirements-jetson.txt").read_text().splitlines()
    jetson = {_name(ln) for ln in lines if ln.strip() and not ln.startswith("#")}
    # torch and torchvision come from the Jetson index (CUDA builds), installed before this file
    missing = {_name(d) for d in deps} - {"torch", "torchvision"} - jetson
    assert not missing, f"docker/requirements-jetson.txt lacks {sorted(missing)}"
    assert not jetson & {"torch", "torchvision", "tensorrt", "onnxruntime", "onnxruntime-gpu"}
