"""Our GGUF control vectors in a REAL llama.cpp steer SmolLM2 the way our steering does.

Round trips inside the package cannot catch a layer offset; this can. llama.cpp (built from
the pinned llama-cpp-python source package, see the Makefile's llama-cpp target) runs an F32
GGUF of the embedded model (made offline from its Q4_1 file, so both sides run the same
weights); the control vector file is parsed by llama.cpp's own C GGUF reader with the loader
rules of its common library (tests/vectors/llamacpp.py) and applied with llama_set_adapter_cvec.

Selected with `-m llama_cpp`. Skipped only when llama_cpp is not importable AND not in CI;
in CI (CI=true) a missing llama_cpp fails.
"""
import os

import numpy as np
import pytest

pytestmark = [pytest.mark.llama_cpp, pytest.mark.slow]


def _require_llama_cpp():
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            raise AssertionError("CI=true but llama_cpp is not importable: run `make llama-cpp` "
                                 "(builds the pinned llama-cpp-python from source)") from None
        pytest.skip("llama_cpp (llama-cpp-python) is not installed: `make llama-cpp` builds it; in CI this runs")


@pytest.fixture(scope="module")
def llm():
    _require_llama_cpp()
    import llamacpp

    model = llamacpp.Llama(llamacpp.f32_gguf(), n_threads=2)
    yield model
    model.close()


@pytest.fixture(scope="module")
def tools():
    import llamacpp

    return llamacpp


def test_loader_rules_match_our_writer(tmp_path, llm, tools, embedded):
    """llama.cpp's loader accepts our file and puts direction.(i-1) in slot i-1 (buffer offset (i-2)*n_embd)."""
    vec = tools.random_vector(llm.n_layer, llm.n_embd).layers([2, 7, 29])
    path = vec.export_gguf(tmp_path / "v.gguf")
    n_embd, data = tools.load_control_vector(path, 2.0)
    assert n_embd == llm.n_embd == embedded[0].config.hidden_size
    assert data.size == n_embd * 28  # up to direction.28 (our layer 29)
    for layer in (2, 7, 29):
        k = layer - 1  # direction.K -> llama.cpp slot K, data[(K-1)*n_embd : K*n_embd]
        np.testing.assert_array_equal(data[(k - 1) * n_embd:k * n_embd], vec.directions[layer] * np.float32(2.0))


def test_first_token_logit_shift_matches_llama_cpp(tmp_path, llm, tools, embedded):
    model, tok = embedded
    rows = tools.shift_correlations(model, tok, llm, tmp_path)
    print("\nllama.cpp vs HF first-token logit shift correlations:")
    for row in rows:
        print("  ", row)
    for row in rows:
        assert row["exported"] >= 0.98, row
        if "shifted_one_layer" in row:
            assert row["shifted_one_layer"] < 0.9, row
            assert row["exported"] - row["shifted_one_layer"] > 0.08, row


def test_behaviour_vector_changes_greedy_text_the_same_way(tmp_path, llm, tools, embedded):
    model, tok = embedded
    layers = list(range(10, 16))
    vector = tools.train_refusal_vector(model, tok, layers)
    rows = tools.greedy_comparison(model, tok, llm, vector, layers, 12.0, tmp_path)
    print("\ngreedy text, unsteered / steered (refusal vector, layers 10-15, strength 12):")
    for r in rows:
        print(f"  {r['prompt']!r}\n    HF plain:      {r['hf_plain']!r}\n    llama plain:   {r['llama_plain']!r}"
              f"\n    HF steered:    {r['hf_steered']!r}\n    llama steered: {r['llama_steered']!r}")
    changed = identical = 0
    for r in rows:
        identical += r["ids"]["hf_steered"] == r["ids"]["llama_steered"]
        ids = r["ids"]
        same = sum(1 for _ in zip(ids["hf_steered"], ids["llama_steered"]))
        prefix = next((i for i, (a, b) in enumerate(zip(ids["hf_steered"], ids["llama_steered"])) if a != b), same)
        assert prefix >= min(12, same), r  # the steered texts agree (at least their first 12 tokens)
        if ids["hf_steered"] != ids["hf_plain"]:
            changed += 1
            assert ids["llama_steered"] != ids["llama_plain"], r  # llama.cpp is changed too
    assert changed >= len(rows) - 1  # the vector really changes the text
    # Whole continuations: at strength 12 the steered model walks through near-ties, and two float32
    # implementations (different summation orders) may part late: one CI run matched 4 of 4, another
    # 2 of 4, parting at tokens 18-20 ("named" / "known as"). The first 12 tokens agree in every row.
    assert identical >= len(rows) // 2
