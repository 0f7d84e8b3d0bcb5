"""Check the codebase's size and coupling goals (issue 14); print one line per violation, exit 1 if any.

    python scripts/check_architecture.py [ROOT]

- no file over 400 lines and no function over 60 lines in toolchain/ or graphs/;
- no import of a private (underscore) name from another module, as `from m import _x` or as
  `m._x` on an imported module, anywhere in the product code;
- no hand-written atomic write (a rename over a path, an fsync, a temporary file made for it)
  outside graphs/atomic.py, the one writer.
"""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
SIZED = ("toolchain", "graphs")  # the packages the size limits apply to
PRODUCT = ("toolchain", "graphs", "calib", "bench", "scripts")
WRITER = "graphs/atomic.py"
# Calls that make up an atomic write by hand: a rename over the target, a flush to disk, the temp file.
ATOMIC_CALLS = {("os", "replace"), ("os", "rename"), ("os", "fsync"), ("shutil", "move"),
                ("tempfile", "mkstemp"), ("tempfile", "NamedTemporaryFile")}


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.detail}"


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def file_size(rel: str, source: str) -> list[Violation]:
    n = len(source.splitlines())
    if n > MAX_FILE_LINES:
        return [Violation(rel, 1, "file-lines", f"{n} lines (max {MAX_FILE_LINES})")]
    return []


def function_sizes(rel: str, tree: ast.AST) -> list[Violation]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES:
                out.append(Violation(rel, node.lineno, "function-lines",
                                     f"{node.name} is {n} lines (max {MAX_FUNCTION_LINES})"))
    return out


def _imported_modules(tree: ast.AST) -> set[str]:
    """Local names bound to modules by `import a.b as m` / `import a` / `from pkg import module`."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:  # `from toolchain import sync` binds a module; harmless for others
                names.add(alias.asname or alias.name)
    return names


def private_imports(rel: str, tree: ast.AST) -> list[Violation]:
    out = []
    modules = _imported_modules(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if _is_private(alias.name):
                    out.append(Violation(rel, node.lineno, "private-import",
                                         f"from {'.' * node.level}{node.module or ''} import {alias.name}"))
        elif (isinstance(node, ast.Attribute) and _is_private(node.attr)
              and isinstance(node.value, ast.Name) and node.value.id in modules):
            out.append(Violation(rel, node.lineno, "private-import", f"{node.value.id}.{node.attr}"))
    return out


def hand_written_atomic(rel: str, tree: ast.AST) -> list[Violation]:
    if rel == WRITER:
        return []
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            if (func.value.id, func.attr) in ATOMIC_CALLS:
                out.append(Violation(rel, node.lineno, "atomic-write",
                                     f"{func.value.id}.{func.attr}() outside {WRITER}"))
                continue
        # Path.rename(t) / Path.replace(t): one argument (str.replace takes two).
        if (isinstance(func, ast.Attribute) and func.attr in ("rename", "replace")
                and len(node.args) == 1 and not node.keywords):
            out.append(Violation(rel, node.lineno, "atomic-write", f".{func.attr}() outside {WRITER}"))
    return out


def check(root: Path) -> list[Violation]:
    found = []
    for top in PRODUCT:
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source, filename=rel)
            if top in SIZED:
                found += file_size(rel, source) + function_sizes(rel, tree)
            found += private_imports(rel, tree) + hand_written_atomic(rel, tree)
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[1]
    found = check(root)
    for v in found:
        print(v)
    print(f"{len(found)} violation(s)" if found else "architecture goals met")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
