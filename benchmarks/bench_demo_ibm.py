"""The demo pipeline on the reference library's public demo data (../shared/data/ibm-demo).

Same settings as `python -m activation_steering demo`, different data: 200
harmful/harmless train pairs and 64+64 held-out prompts sampled (seeded) from
the reference data, 64 Alpaca questions x 16 of its refusal/compliance openers.
Skips cleanly when ../shared is absent. Nothing is copied into the project.

    .venv/bin/python benchmarks/bench_demo_ibm.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ibm-demo"


def main() -> int:
    if not (SHARED / "condition_harmful.json").is_file():
        print(f"skipped: {SHARED} not found")
        return 0
    from activation_steering import demo

    t0 = time.perf_counter()
    results = demo.run(demo.DemoSettings(), demo.ibm_demo_data(SHARED), output_dir="out/demo_ibm")
    print(demo.format_table(results))
    print(f"total {time.perf_counter() - t0:.0f}s; artefacts in out/demo_ibm/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
