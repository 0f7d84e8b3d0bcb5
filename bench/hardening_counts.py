"""Hardening counts (issue 7): generated architectures, fault injection, bad inputs -- each with the
command that reproduces it.

    python bench/hardening_counts.py                 # generated (fast profile) + bad inputs
    python bench/hardening_counts.py --faults        # + fault injection (slow: real processes, kill -9)
    python bench/hardening_counts.py --examples 600  # a longer, non-derandomized generated run

Counts come from running the suites themselves: the generated-architecture property (the same
`check_architecture` the tests use) in this process, the bad-input walk and the fault suite through
pytest (JUnit XML / the FAULTS line the fault suite prints).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def generated(examples: int, derandomize: bool) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT))
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    import test_generated_architectures as t

    t.COUNTS.clear()
    failures = []

    @settings(max_examples=examples, deadline=None, derandomize=derandomize, database=None,
              suppress_health_check=list(HealthCheck))
    @given(spec=t.architectures(), plan_seed=st.integers(0, 2**31 - 1))
    def run(spec, plan_seed):
        t.check_architecture(spec, plan_seed)

    start = time.time()
    try:
        run()
    except Exception as exc:  # hypothesis re-raises the minimal failing example
        failures.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    return {"tried": t.COUNTS["tried"], "passed": t.COUNTS["passed"], "refused with a reason": t.COUNTS["refused"],
            "degenerate scale (passed)": t.COUNTS["degenerate"], "failures": failures,
            "top refusals": t.REFUSALS.most_common(5), "seconds": round(time.time() - start, 1)}


def junit(path: str) -> dict:
    counts = {"tried": 0, "passed": 0, "failed": 0, "skipped": 0, "failures": []}
    for case in ET.parse(path).getroot().iter("testcase"):
        counts["tried"] += 1
        if case.find("skipped") is not None:
            counts["skipped"] += 1
        elif case.find("failure") is not None or case.find("error") is not None:
            counts["failed"] += 1
            counts["failures"].append(case.get("name"))
        else:
            counts["passed"] += 1
    return counts


def bad_inputs() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        xml = os.path.join(tmp, "bad.xml")
        start = time.time()
        subprocess.run([sys.executable, "-m", "pytest", "tests/test_bad_inputs.py", "-q", "-p", "no:cacheprovider",
                        "-k", "refused_cleanly or subprocess", f"--junitxml={xml}"], cwd=ROOT, capture_output=True)
        counts = junit(xml)
    counts["seconds"] = round(time.time() - start, 1)
    return counts


def faults() -> dict:
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/test_fault_injection.py", "-m", "slow", "-q", "-s",
                           "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True)
    match = re.search(r"^FAULTS (\{.*\})$", proc.stdout, re.M)
    counts = json.loads(match.group(1)) if match else {}
    injected = sum(v for k, v in counts.items() if k.endswith("injected"))
    survived = sum(v for k, v in counts.items() if k.endswith("survived"))
    tail = [ln for ln in proc.stdout.splitlines() if re.search(r"passed|failed", ln)][-1:]
    return {"injected": injected, "survived": survived, "by command": counts, "pytest": tail,
            "seconds": round(time.time() - start, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=60, help="generated architectures to try (60 = the CI profile)")
    ap.add_argument("--faults", action="store_true", help="also run the (slow) fault-injection suite")
    args = ap.parse_args()
    derandomize = args.examples == 60
    g = generated(args.examples, derandomize)
    print(f"generated architectures: tried {g['tried']}, passed {g['passed']}, refused with a reason "
          f"{g['refused with a reason']}, failures {len(g['failures'])} ({g['seconds']} s)")
    for f in g["failures"]:
        print(f"  failure: {f}")
    print(f"  top refusals: {g['top refusals']}")
    print("  reproduce: pytest tests/test_generated_architectures.py   (long: pytest -m slow tests/test_generated_architectures.py)")
    b = bad_inputs()
    print(f"bad inputs: tried {b['tried']} (command x input), refused cleanly or accepted as documented {b['passed']}, "
          f"not clean {b['failed']}, skipped {b['skipped']} ({b['seconds']} s)")
    for f in b["failures"]:
        print(f"  not clean: {f}")
    print("  reproduce: pytest tests/test_bad_inputs.py")
    if args.faults:
        f = faults()
        print(f"faults: injected {f['injected']}, survived {f['survived']} {f['by command']} ({f['seconds']} s) {f['pytest']}")
        print("  reproduce: COMPRESS_FAULT_ROUNDS=3 pytest -m slow -s tests/test_fault_injection.py")


if __name__ == "__main__":
    main()
