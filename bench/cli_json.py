"""Run the compress CLI from a bench script as a user would, and read its --json output."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def compress(*args: str) -> dict:
    """Run the CLI as a user would; its --json output, or {"error": the exit code and its last stderr line}."""
    run = subprocess.run([sys.executable, "-m", "toolchain.cli", *args, "--json"], cwd=ROOT, capture_output=True, text=True)
    if run.returncode in (0, 1):
        try:
            return json.loads(run.stdout)
        except ValueError:  # a crash after the exit code was decided: report it, keep the run going
            pass
    return {"error": f"exit {run.returncode}: " + (run.stderr.strip().splitlines() or ["no message"])[-1]}
