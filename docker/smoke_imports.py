"""Import every module that `compress pipeline` and `compress build` can reach, lazy imports included.

The list is derived from the source, never written down, so it cannot fall behind the code: starting
at the CLI, toolchain.pipeline and toolchain.build, follow every import statement (at module level
and inside functions) and every dotted module name written as a string (the backends' registry)
through the project's own packages (the package folders beside docker/). Every first-party module
reached is imported, then every third-party module they import, and each `from X import NAME` is
checked to give NAME (an API that moved between versions fails here, not halfway through a build on
the target).

A third-party module is optional when the code asks for it through `require(...)` or inside
`try: ... except ImportError`, or when only an optional extra of the installed `compress` declares
it (TensorRT, Ray, ...): absent, it is reported, not failed, unless named with --require.

    python docker/smoke_imports.py [--require tensorrt] [--json] [--root MODULE ...]

Exit 0 when everything imports; 1, naming each module and its error, when something does not.
Runs on Python 3.10 (JetPack 6) with the standard library only.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import importlib.metadata as md
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOTS = ["toolchain.cli", "toolchain.pipeline", "toolchain.build"]
DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


@dataclass
class Walk:
    first_party: set[str] = field(default_factory=set)
    # third-party module -> names imported from it ("" for a plain `import X`)
    third_party: dict[str, set[str]] = field(default_factory=dict)
    optional: set[str] = field(default_factory=set)  # asked for ONLY via require() or try/except ImportError
    required: set[str] = field(default_factory=set)  # imported plainly somewhere
    names: dict[str, set[str]] = field(default_factory=dict)  # first-party `from M import NAME` to check


def module_file(repo: Path, name: str) -> Path | None:
    base = repo.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of import nodes under `if TYPE_CHECKING:` (never executed at run time)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                skipped.update(id(n) for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return skipped


def _guarded_by_import_error(tree: ast.AST) -> set[int]:
    """ids of import nodes inside `try:` bodies whose handlers catch ImportError (optional imports)."""
    guarded = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
        if any(e in c for c in caught for e in ("ImportError", "ModuleNotFoundError", "Exception")):
            for stmt in node.body:
                guarded.update(id(n) for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return guarded


def imports_of(path: Path, module: str) -> list[tuple[str, str, str]]:
    """(module, name or "", how) for every import anywhere in the file. how: "import" (a statement),
    "optional" (a statement under try/except ImportError, or a require()/import_module() call: asked
    for at run time), "string" (a dotted string constant: a registry entry if it names our module)."""
    tree = ast.parse(path.read_text(), str(path))
    guarded, skipped = _guarded_by_import_error(tree), _type_checking_only(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        how = "optional" if id(node) in guarded else "import"
        if isinstance(node, ast.Import):
            found += [(a.name, "", how) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base != "__future__":
                found += [(base, "" if a.name == "*" else a.name, how) for a in node.names]
        elif isinstance(node, ast.Call) and _called(node) in ("require", "import_module") and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            found.append((node.args[0].value, "", "optional"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and DOTTED.match(node.value):
            found.append((node.value, "", "string"))
    return found


def _called(call: ast.Call) -> str:
    return getattr(call.func, "id", None) or getattr(call.func, "attr", "")


def walk(repo: Path, roots: list[str]) -> Walk:
    """First-party modules reachable from the roots, and the third-party imports they make."""
    ours = {p.name for p in repo.iterdir() if (p / "__init__.py").is_file()}
    stdlib = set(sys.stdlib_module_names)
    w = Walk()
    todo = list(roots)
    while todo:
        mod = todo.pop()
        path = module_file(repo, mod)
        if mod in w.first_party or path is None:
            continue
        w.first_party.add(mod)
        parts = mod.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a module runs its parents
        for name, attr, how in imports_of(path, mod):
            top = name.split(".")[0]
            if top in ours:
                sub = f"{name}.{attr}" if attr and module_file(repo, f"{name}.{attr}") else ""
                todo += [n for n in (name, sub) if n]
                if attr and not sub and module_file(repo, name):
                    w.names.setdefault(name, set()).add(attr)
            elif how != "string" and top not in stdlib:
                w.third_party.setdefault(name, set()).add(attr)
                (w.optional if how == "optional" else w.required).add(top)
    w.optional -= w.required
    return w


def declared(dist: str = "compress") -> tuple[set[str], set[str]]:
    """(required, extras-only) distribution names the installed project declares; empty if not installed."""
    try:
        reqs = md.requires(dist) or []
    except md.PackageNotFoundError:
        return set(), set()
    canon = lambda r: re.split(r"[ ;<>=!~\[]", r, maxsplit=1)[0].lower().replace("_", "-")  # noqa: E731
    required = {canon(r) for r in reqs if "extra ==" not in r}
    return required, {canon(r) for r in reqs if "extra ==" in r} - required


def distribution_of(top: str) -> str:
    dists = md.packages_distributions().get(top) or [top]
    return dists[0].lower().replace("_", "-")


def optional_modules(w: Walk, require: set[str]) -> set[str]:
    """Top-level modules allowed to be absent: only ever asked for optionally (and not a declared
    dependency), or declared only by an optional extra; never one named with --require."""
    required, extras = declared()
    tops = {m.split(".")[0] for m in w.third_party}
    by_code = {t for t in w.optional if distribution_of(t) not in required}
    return (by_code | {t for t in tops if distribution_of(t) in extras}) - require


def import_all(w: Walk, optional: set[str]) -> tuple[list[str], list[str], list[str]]:
    """Import everything the walk found. Returns (imported, failures, optional modules absent)."""
    imported, failures, absent = [], [], []
    for mod in sorted(w.first_party):
        try:
            module = importlib.import_module(mod)
        except Exception as exc:  # any failure to import is what this check exists to report
            failures.append(f"{mod}: {type(exc).__name__}: {exc}")
            continue
        imported.append(mod)
        missing = sorted(n for n in w.names.get(mod, ()) if not hasattr(module, n))
        if missing:
            failures.append(f"{mod}: has no {', '.join(missing)}")
    for mod in sorted(w.third_party):
        top = mod.split(".")[0]
        try:
            module = importlib.import_module(mod)
        except Exception as exc:
            (absent if top in optional else failures).append(f"{mod}: {type(exc).__name__}: {exc}")
            continue
        imported.append(mod)
        for name in sorted(n for n in w.third_party[mod] if n and not hasattr(module, n)):
            try:
                importlib.import_module(f"{mod}.{name}")
            except Exception as exc:
                (absent if top in optional else failures).append(f"{mod}: no {name} ({type(exc).__name__})")
    return imported, failures, absent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", action="append", help=f"start module (repeatable; default {' '.join(ROOTS)})")
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1],
                    help="folder holding the project's packages (default: the one above docker/)")
    ap.add_argument("--require", action="append", default=[], help="an optional module that must import here")
    ap.add_argument("--json", action="store_true", help="print what was found and imported as JSON")
    args = ap.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")  # images have no display
    sys.path.insert(0, str(args.repo))
    w = walk(args.repo, args.root or ROOTS)
    for mod in args.require:  # tried even when no code path names it
        w.third_party.setdefault(mod, set())
    optional = optional_modules(w, set(args.require))
    imported, failures, absent = import_all(w, optional)
    if args.json:
        print(json.dumps({"first_party": sorted(w.first_party), "third_party": sorted(w.third_party),
                          "optional": sorted(optional), "imported": imported,
                          "failures": failures, "optional_absent": absent}, indent=1))
    else:
        print(f"smoke: {len(w.first_party)} first-party and {len(w.third_party)} third-party modules "
              f"reachable from {', '.join(args.root or ROOTS)}; {len(imported)} imported")
        for line in absent:
            print(f"  optional, absent: {line}")
        for line in failures:
            print(f"  FAILED {line}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
