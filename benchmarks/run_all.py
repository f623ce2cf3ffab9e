"""Run the project's benchmarks one after another (what `make bench` calls).

Default: a quick pass (small sizes, one repetition) that checks every benchmark
still runs and prints its ratios in a few minutes on 2 CPU cores; the figures in
README / docs/performance.md come from the full settings (``--full``, each
script's own defaults). Benchmarks whose data (../shared) is absent say
"skipped" and count as passed. Not run here: sweep_demo_settings.py (a
parameter sweep, not a benchmark) and gpu_check.sh (for a CUDA machine).

    python benchmarks/run_all.py [--full] [--only steering,condition_search]

Exit status: 0 when every benchmark ran, else 1 (the failing ones are listed).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: name -> (script, quick arguments)
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "steering": ("bench_steering.py", ["--new-tokens", "16", "--reps", "1", "--step-reps", "2",
                                       "--step-tokens", "4", "--threads", "1"]),
    "condition_search": ("bench_condition_search.py", ["--n-train", "24", "--n-test", "24",
                                                       "--pairs-subset", "2"]),
    "extraction": ("bench_extraction.py", ["--tasks", "condition", "--layer-sets", "demo"]),
    "demo_ibm": ("bench_demo_ibm.py", []),
    "and_search": ("bench_and_search.py", ["--reps", "1", "--max-combine", "2"]),
    "operators": ("bench_operators.py", ["--threads", "1", "--rounds", "3", "--calls", "10"]),
}
QUICK_SKIP = {"demo_ibm"}  # the whole demo on the reference data: minutes even when small


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true",
                    help="each benchmark with its own default (full-size) settings (default: quick settings)")
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(BENCHMARKS)
                    + " (default: all)")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or [n for n in BENCHMARKS if args.full or n not in QUICK_SKIP]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        ap.error(f"--only: unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)}")
    failed = []
    for name in names:
        script, quick = BENCHMARKS[name]
        cmd = [sys.executable, str(HERE / script), *([] if args.full else quick)]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        print(f"=== {name}: exit {rc} in {time.perf_counter() - t0:.1f} s", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        return 1
    print(f"\nall {len(names)} benchmark(s) ran")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
