"""Every malformed steering-vector file (.svec JSON, GGUF, safetensors) raises VectorFileError,
a ValueError naming the file and the problem; nothing else escapes (no RecursionError,
OverflowError, bare ValueError, KeyError from a parser)."""
import json
import struct

import numpy as np
import pytest

from activation_steering import SteeringVector
from activation_steering.vectors.errors import VectorFileError

GOOD = {"model_type": "m", "directions": {"0": [1.0, 2.0]}, "explained_variances": {"0": 0.5}}


def svec_text(directions='{"0": [1.0, 2.0]}', ev='{"0": 0.5}'):
    return '{"model_type": "m", "directions": %s, "explained_variances": %s}' % (directions, ev)


HOSTILE_SVEC = [
    ("[" * 100_000 + "]" * 100_000, "deeper than"),
    ('{"a": ' * 5000 + "1" + "}" * 5000, "deeper than"),
    (svec_text(directions='{"0": [1.0, 1e99999]}'), "not a finite float32"),
    (svec_text(directions='{"0": [1.0, %s]}' % ("9" * 400)), "digits"),
    (svec_text(directions='{"0": [1.0, %s]}' % ("1" * 5000)), "5000 digits"),
    (svec_text(ev='{"0": %s}' % ("9" * 5000)), "5000 digits"),
    (svec_text(ev='{"0": 1e400}'), "not a finite float32"),
    (svec_text(directions='{"\u00b2": [1.0, 2.0]}', ev='{"\u00b2": 0.5}'), "not an integer layer id"),
    (svec_text(directions='{"\u0663": [1.0, 2.0]}', ev='{"\u0663": 0.5}'), "not an integer layer id"),
    (svec_text(directions='{"\uff11": [1.0, 2.0]}', ev='{"\uff11": 0.5}'), "not an integer layer id"),
    (svec_text(directions='{"%d": [1.0, 2.0]}' % 10**30, ev='{"%d": 0.5}' % 10**30), "not an integer layer id"),
    (svec_text(directions='{"2000000": [1.0, 2.0]}', ev='{"2000000": 0.5}'), "beyond any model"),
    (svec_text(directions='{"0": [1.0, 2.0], "0": [3.0, 4.0]}'), "key '0' twice"),
    (svec_text(ev='{"0": 0.5, "0": 0.7}'), "key '0' twice"),
    ('{"model_type": "m", "model_type": "n", "directions": {"0": [1.0]}, "explained_variances": {"0": 1}}',
     "key 'model_type' twice"),
    (svec_text(directions='{"-0": [1.0, 2.0], "0": [3.0, 4.0]}', ev='{"0": 0.5}'), "layer 0 twice"),
    (svec_text(directions='{" 1": [1.0, 2.0]}', ev='{" 1": 0.5}'), "not an integer layer id"),
    (svec_text(directions='{"0": [[1.0], [2.0]]}'), "non-number"),
    ("", "empty"),
    (svec_text()[:-5], "truncated"),
    ('{"model_type": "m", "directions": {"0": [1.0]}, "explained_variances": {"0": 1}, "provenance": [1]}',
     "provenance"),
    ('{"model_type": "m", "directions": {"0": [1.0]}, "explained_variances": {"0": 1}, '
     '"provenance": {"n_layers": "many"}}', "n_layers"),
]


@pytest.mark.parametrize("content, problem", HOSTILE_SVEC, ids=range(len(HOSTILE_SVEC)))
def test_hostile_svec_files(tmp_path, content, problem):
    path = tmp_path / "bad.svec"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(VectorFileError, match=problem) as info:
        SteeringVector.load(path)
    assert str(path) in str(info.value) and isinstance(info.value, ValueError)
    assert info.value.path == str(path)


def _gguf(path, tensors, arch="controlvector", hint="llama", drop_arch=False):
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    if drop_arch:
        del w.kv_data[0]["general.architecture"]
    if hint is not None:
        w.add_string(f"{arch}.model_hint", hint)
    for name, arr in tensors.items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


ONE = np.arange(4, dtype=np.float32)


@pytest.mark.parametrize("make, problem", [
    (lambda p: _gguf(p, {"direction.1": ONE.astype(np.float16)}), "type F16, not F32"),
    (lambda p: _gguf(p, {"direction.1": ONE.reshape(2, 2)}), "not 1-D"),
    (lambda p: _gguf(p, {"direction.0": ONE}), "direction.0"),
    (lambda p: _gguf(p, {"direction.x": ONE}), "not named direction"),
    (lambda p: _gguf(p, {"weight": ONE}), "not named direction"),
    (lambda p: _gguf(p, {"direction.1": ONE, "direction.2": np.ones(3, np.float32)}), "other directions have 4"),
    (lambda p: _gguf(p, {"direction.1": np.array([1, np.nan, 0, 0], np.float32)}), "NaN"),
    (lambda p: _gguf(p, {}), "no direction tensors"),
    (lambda p: _gguf(p, {"direction.1": ONE}, arch="llama"), "not 'controlvector'"),
    (lambda p: _gguf(p, {"direction.1": ONE}, drop_arch=True), "missing the key 'general.architecture'"),
    (lambda p: p.write_bytes(b"GGUF\x03\x00\x00\x00"), "not a readable GGUF"),
    (lambda p: p.write_bytes(b"GGUF" + b"\xff" * 40), "not a readable GGUF"),
])
def test_hostile_gguf_files(tmp_path, make, problem):
    path = tmp_path / "bad.gguf"
    make(path)
    with pytest.raises(VectorFileError, match=problem) as info:
        SteeringVector.load(path)
    assert str(path) in str(info.value)


def test_truncated_gguf_and_safetensors(tmp_path):
    v = SteeringVector("llama", {i: np.full(64, i, np.float32) for i in (2, 3)}, {2: 0.5, 3: 0.5})
    for suffix in (".gguf", ".safetensors", ".svec"):
        full = open(v.save(tmp_path / f"v{suffix}"), "rb").read()
        for cut in (len(full) - 1, len(full) - 100, len(full) // 2, 30, 12):
            path = tmp_path / f"cut{cut}{suffix}"
            path.write_bytes(full[:cut])
            with pytest.raises(VectorFileError) as info:
                SteeringVector.load(path)
            assert str(path) in str(info.value)


def _st(path, tensors, metadata):
    from safetensors.numpy import save_file

    save_file(tensors, str(path), metadata=metadata)


META = {"format": "activation_steering.steering_vector", "format_version": "1", "model_type": "m",
        "explained_variances": '{"1": 0.5}'}


@pytest.mark.parametrize("make, problem", [
    (lambda p: _st(p, {"layers.1": ONE.astype(np.float16)}, META), "dtype F16, not F32"),
    (lambda p: _st(p, {"layers.1": ONE.astype(np.float64)}, META), "dtype F64"),
    (lambda p: _st(p, {"layers.1": ONE.reshape(2, 2)}, META), "shape"),
    (lambda p: _st(p, {"model.embed_tokens.weight": ONE}, {}), "not a steering vector"),
    (lambda p: _st(p, {"layers.1": ONE}, {k: v for k, v in META.items() if k != "model_type"}), "model_type"),
    (lambda p: _st(p, {"layers.1": ONE}, {k: v for k, v in META.items() if k != "explained_variances"}),
     "explained_variances"),
    (lambda p: _st(p, {"layers.1": ONE}, {**META, "explained_variances": '{"1": 0.5, "1": 0.6}'}), "twice"),
    (lambda p: _st(p, {"layers.1": ONE}, {**META, "explained_variances": "[" * 10000}), "deeper"),
    (lambda p: _st(p, {"layers.1": ONE}, {**META, "explained_variances": '{"2": 0.5}'}), "differ"),
    (lambda p: _st(p, {"layers.\u00b2": ONE}, META), "not named layers"),
    (lambda p: _st(p, {"layers.1": ONE}, {**META, "provenance": '{"hidden_size": "big"}'}), "hidden_size"),
    (lambda p: p.write_bytes(struct.pack("<Q", 10**9) + b"{" + b" " * 20), "not a readable safetensors"),
    (lambda p: p.write_bytes(struct.pack("<Q", 5) + b"{}   "), "not a steering vector"),
])
def test_hostile_safetensors_files(tmp_path, make, problem):
    path = tmp_path / "bad.safetensors"
    make(path)
    with pytest.raises(VectorFileError, match=problem) as info:
        SteeringVector.load(path)
    assert str(path) in str(info.value)


def test_pickle_and_binary_junk_are_refused_without_executing(tmp_path):
    import pickle

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('executed')",))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(VectorFileError, match="evil.safetensors"):
        SteeringVector.load(path)


def test_cli_exits_2_on_a_malformed_vector(tmp_path, capsys):
    from activation_steering.cli import main

    path = tmp_path / "bad.svec"
    path.write_text(svec_text(directions='{"\u00b2": [1.0, 2.0]}', ev='{"\u00b2": 0.5}'))
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps(["hi"]))
    assert main(["search", "--vector", str(path), "--positive", str(prompts), "--negative", str(prompts)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "not an integer layer id" in err
