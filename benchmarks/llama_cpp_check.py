"""Figures for docs/formats.md: our GGUF control vectors in a real llama.cpp vs our steering.

    make llama-cpp && OMP_NUM_THREADS=1 PYTHONPATH=python .venv/bin/python benchmarks/llama_cpp_check.py [--json OUT]

Prints (1) per layer, the correlation of the first-token logit shift (steered minus unsteered)
from llama.cpp and from our steered HF model, for the exported vector and for the same vector
moved one layer deeper, and (2) greedy text of a trained refusal vector in both. Same code as
tests/vectors/test_llama_cpp.py (tests/vectors/llamacpp.py); this script only reports.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "vectors"))

import llamacpp  # noqa: E402

from activation_steering.models import load_default_model  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--quantised", action="store_true", help="run llama.cpp on the Q4_1 GGUF instead of F32")
    ap.add_argument("--shift-only", action="store_true", help="only the logit-shift correlations (no training)")
    args = ap.parse_args()
    from activation_steering.models import gguf_path

    model, tok = load_default_model()
    path = gguf_path() if args.quantised else llamacpp.f32_gguf()
    llm = llamacpp.Llama(path, n_threads=2)
    out = {"gguf": path.name}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        out["shift_correlations"] = llamacpp.shift_correlations(model, tok, llm, Path(tmp))
        out["shift_seconds"] = round(time.perf_counter() - t, 1)
        for row in out["shift_correlations"]:
            print(row)
        if args.shift_only:
            llm.close()
            return 0
        vector = llamacpp.train_refusal_vector(model, tok)
        rows = llamacpp.greedy_comparison(model, tok, llm, vector, range(10, 16), 12.0, Path(tmp))
        for r in rows:
            r.pop("ids")
            print(json.dumps(r, ensure_ascii=False, indent=1))
        out["greedy"] = rows
    llm.close()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
