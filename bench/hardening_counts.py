"""Hardening counts (issue 7): generated architectures, fault injection, bad inputs -- each with the
command that reproduces it.

    python bench/hardening_counts.py                 # generated (fast profile) + bad inputs
    python bench/hardening_counts.py --faults        # + fault injection (slow: real processes, kill -9)
    python bench/hardening_counts.py --examples 600  # a longer, non-derandomized generated run

The counts are also written to bench/results/hardening_counts.txt (date, commit, command line on
top; --log PATH or - to change that).

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

from benchlog import logged

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
    counts = {"tried": 0, "passed": 0, "failed": 0, "skipped": 0, "failures": [], "subprocess passed": 0}
    for case in ET.parse(path).getroot().iter("testcase"):
        counts["tried"] += 1
        if case.find("skipped") is not None:
            counts["skipped"] += 1
        elif case.find("failure") is not None or case.find("error") is not None:
            counts["failed"] += 1
            counts["failures"].append(case.get("name"))
        else:
            counts["passed"] += 1
            counts["subprocess passed"] += case.get("name", "").startswith("test_bad_input_subprocess")
    return counts


# loaded into the pytest run with -p: writes the walk's own tally (tests/test_bad_inputs.py OUTCOMES:
# refused cleanly vs accepted as documented), which JUnit cannot tell apart (both are passes)
OUTCOMES_PLUGIN = """
import json, os, sys
def pytest_sessionfinish(session):
    mod = sys.modules.get("test_bad_inputs")
    with open(os.environ["BENCH_OUTCOMES"], "w") as f:
        json.dump(dict(mod.OUTCOMES) if mod else {}, f)
"""


def bad_inputs() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        xml = os.path.join(tmp, "bad.xml")
        Path(tmp, "bench_outcomes.py").write_text(OUTCOMES_PLUGIN)
        env = {**os.environ, "BENCH_OUTCOMES": os.path.join(tmp, "outcomes.json"),
               "PYTHONPATH": os.pathsep.join([tmp, str(ROOT), os.environ.get("PYTHONPATH", "")])}
        start = time.time()
        subprocess.run([sys.executable, "-m", "pytest", "tests/test_bad_inputs.py", "-q", "-p", "no:cacheprovider",
                        "-p", "bench_outcomes", "-k", "refused_cleanly or subprocess", f"--junitxml={xml}"],
                       cwd=ROOT, capture_output=True, env=env)
        counts = junit(xml)
        outcomes = json.loads(Path(env["BENCH_OUTCOMES"]).read_text())
    counts["refused"] = outcomes.get("refused cleanly", 0) + counts["subprocess passed"]
    counts["accepted"] = outcomes.get("accepted", 0)
    counts["seconds"] = round(time.time() - start, 1)
    return counts


def faults() -> dict:
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/test_fault_injection.py", "-m", "slow", "-q", "-s",
                           "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True)
    match = re.search(r"FAULTS (\{.*\})$", proc.stdout, re.M)  # -q puts progress dots before it
    if not match:
        raise SystemExit("fault injection printed no FAULTS tally:\n" + proc.stdout[-2000:])
    counts = json.loads(match.group(1))
    injected = sum(v for k, v in counts.items() if k.endswith("injected"))
    survived = sum(v for k, v in counts.items() if k.endswith("survived"))
    tail = [ln for ln in proc.stdout.splitlines() if re.search(r"passed|failed", ln)][-1:]
    return {"injected": injected, "survived": survived, "by command": counts, "pytest": tail,
            "seconds": round(time.time() - start, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=60, help="generated architectures to try (60 = the CI profile)")
    ap.add_argument("--faults", action="store_true", help="also run the (slow) fault-injection suite")
    ap.add_argument("--log", default=None, help="log file (default bench/results/hardening_counts.txt; - for none)")
    args = ap.parse_args()
    with logged("hardening_counts", args.log):
        report(args)


def report(args) -> None:
    derandomize = args.examples == 60
    g = generated(args.examples, derandomize)
    print(f"generated architectures: tried {g['tried']}, passed {g['passed']}, refused with a reason "
          f"{g['refused with a reason']}, failures {len(g['failures'])} ({g['seconds']} s)")
    for f in g["failures"]:
        print(f"  failure: {f}")
    print(f"  top refusals: {g['top refusals']}")
    print("  reproduce: pytest tests/test_generated_architectures.py   (long: pytest -m slow tests/test_generated_architectures.py)")
    b = bad_inputs()
    print(f"bad inputs: tried {b['tried']} (command x input): refused cleanly {b['refused']} (exit 2, one line, "
          f"nothing written), accepted as documented {b['accepted']} (exit 0, no traceback), not clean {b['failed']}, "
          f"skipped {b['skipped']} ({b['seconds']} s)")
    if b["refused"] + b["accepted"] != b["passed"]:
        print(f"  note: {b['passed']} passed but the tally gives {b['refused']} + {b['accepted']}")
    for f in b["failures"]:
        print(f"  not clean: {f}")
    print("  reproduce: pytest tests/test_bad_inputs.py")
    if args.faults:
        f = faults()
        print(f"faults: injected {f['injected']}, survived {f['survived']} {f['by command']} ({f['seconds']} s) {f['pytest']}")
        print("  reproduce: COMPRESS_FAULT_ROUNDS=3 pytest -m slow -s tests/test_fault_injection.py")


if __name__ == "__main__":
    main()
