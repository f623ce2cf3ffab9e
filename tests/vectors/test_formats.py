"""Steering vectors that travel: .svec <-> GGUF (llama.cpp control vector) <-> safetensors.

Round trips are bit-exact on directions; the GGUF holds exactly what llama.cpp's loader
accepts (read back with the `gguf` package); the layer mapping our layer i <-> direction.(i-1)
is checked here on the file and against a real llama.cpp in test_llama_cpp.py.
"""
import json
import warnings

import numpy as np
import pytest

from activation_steering import SteeringVector
from activation_steering.config import GlobalConfig
from activation_steering.vectors.errors import VectorFileError

GlobalConfig.set_verbose(False, "SteeringVector")

N_LAYERS, DIM = 8, 16
PROV = {"model_type": "llama", "model_id": "tiny/llama", "hidden_size": DIM, "n_layers": N_LAYERS,
        "config_sha256": "ab" * 32, "method": "pca_pairwise", "pooling": "1", "n_pairs": 12,
        "read_site": "decoder_layer_output", "add_site": "decoder_layer_input", "format_version": 1}


def make(layers=range(2, N_LAYERS), seed=0, prov=PROV, model_type="llama"):
    rng = np.random.default_rng(seed)
    dirs = {i: (rng.standard_normal(DIM) * 10.0 ** rng.integers(-3, 3)).astype(np.float32) for i in layers}
    ev = {i: float(rng.uniform()) for i in layers}
    return SteeringVector(model_type, dirs, ev, provenance=dict(prov))


def same_directions(a, b):
    assert list(a.directions) == list(b.directions)
    for k in a.directions:
        assert np.asarray(b.directions[k]).dtype == np.float32
        assert np.asarray(a.directions[k], np.float32).tobytes() == np.asarray(b.directions[k]).tobytes(), k


@pytest.mark.parametrize("suffix", [".svec", ".gguf", ".safetensors"])
def test_round_trip_each_format_is_bit_exact_with_provenance(tmp_path, suffix):
    v = make()
    path = v.save(tmp_path / f"v{suffix}")
    assert path.endswith(suffix)
    back = SteeringVector.load(path)
    same_directions(v, back)
    assert back.model_type == "llama"
    assert back.explained_variances == v.explained_variances
    for key, value in PROV.items():
        assert back.provenance[key] == value, key


def test_round_trip_chain_svec_gguf_safetensors_svec(tmp_path):
    v = make()
    a = SteeringVector.load(v.save(tmp_path / "a.svec"))
    b = SteeringVector.load(a.save(tmp_path / "b.gguf"))
    c = SteeringVector.load(b.save(tmp_path / "c.safetensors"))
    d = SteeringVector.load(c.save(tmp_path / "d"))
    assert (tmp_path / "d.svec").is_file()
    for x in (a, b, c, d):
        same_directions(v, x)
        assert x.explained_variances == v.explained_variances
        assert x == v


def test_load_detects_format_from_content_not_name(tmp_path):
    v = make()
    for suffix in (".gguf", ".safetensors", ".svec"):
        written = v.save(tmp_path / f"v{suffix}")
        renamed = tmp_path / f"renamed{suffix}.bin"
        (tmp_path / written.split("/")[-1]).rename(renamed)
        same_directions(v, SteeringVector.load(renamed))


def test_save_suffix_rules(tmp_path):
    v = make()
    assert v.save(tmp_path / "noext").endswith("noext.svec")
    assert v.save(tmp_path / "x.json").endswith("x.json.svec")  # unknown suffix: .svec appended, as before
    assert v.save(tmp_path / "X.GGUF").endswith("X.GGUF")
    assert (tmp_path / "X.GGUF").read_bytes()[:4] == b"GGUF"
    assert SteeringVector.load(tmp_path / "noext") == v  # ".svec" appended when reading too


def test_gguf_holds_exactly_what_llama_cpp_reads(tmp_path):
    import gguf

    v = make()
    path = v.export_gguf(tmp_path / "cv.gguf")
    r = gguf.GGUFReader(path)
    names = sorted(t.name for t in r.tensors)
    # our layer i is added to decoder layer i's input = block (i-1)'s output = direction.(i-1)
    assert names == sorted(f"direction.{i - 1}" for i in range(2, N_LAYERS))
    for t in r.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert [int(s) for s in t.shape] == [DIM]
        k = int(t.name.split(".")[1])
        assert np.asarray(t.data).tobytes() == v.directions[k + 1].tobytes()
    keys = {k for k in r.fields if not k.startswith("GGUF.")}
    assert r.fields["general.architecture"].contents() == "controlvector"
    assert r.fields["controlvector.model_hint"].contents() == "llama"
    assert r.fields["controlvector.layer_count"].contents() == N_LAYERS - 2
    expected = {"general.architecture", "controlvector.model_hint", "controlvector.layer_count",
                "activation_steering.format_version", "activation_steering.model_type",
                "activation_steering.layers", "activation_steering.explained_variances",
                "activation_steering.layer_mapping"} | {f"activation_steering.provenance.{k}" for k in PROV}
    assert keys == expected
    assert r.fields["activation_steering.layers"].contents() == list(range(2, N_LAYERS))
    assert r.fields["activation_steering.explained_variances"].contents() == [v.explained_variances[i]
                                                                              for i in range(2, N_LAYERS)]
    assert r.fields["activation_steering.provenance.model_id"].contents() == "tiny/llama"
    assert r.fields["activation_steering.provenance.n_layers"].contents() == N_LAYERS


def test_gguf_export_leaves_out_layers_0_and_1_with_a_warning(tmp_path):
    v = make(layers=range(0, 4))
    with pytest.warns(UserWarning, match=r"layer\(s\) \[0, 1\] cannot be expressed"):
        path = v.save(tmp_path / "cv.gguf")
    back = SteeringVector.load(path)
    assert list(back.directions) == [2, 3]
    with pytest.raises(ValueError, match="layers >= 2"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            make(layers=[0, 1]).save(tmp_path / "none.gguf")
    assert not (tmp_path / "none.gguf").exists()


def test_gguf_negative_layer_ids_resolve_through_provenance(tmp_path):
    v = make(layers=[-1, -2])
    back = SteeringVector.load(v.save(tmp_path / "neg.gguf"))
    assert sorted(back.directions) == [N_LAYERS - 2, N_LAYERS - 1]
    assert back.directions[N_LAYERS - 1].tobytes() == v.directions[-1].tobytes()
    no_layers = make(layers=[-1], prov={"model_type": "llama"})
    with pytest.raises(ValueError, match="counts from the end"):
        no_layers.save(tmp_path / "neg2.gguf")


def _write_foreign_gguf(path, ks, dim=DIM, hint="llama", layer_count=None, dtype=np.float32, extra=None):
    """A control vector as llama.cpp's cvector-generator / repeng write it."""
    import gguf

    w = gguf.GGUFWriter(str(path), "controlvector")
    w.add_string("controlvector.model_hint", hint)
    w.add_int32("controlvector.layer_count", len(ks) if layer_count is None else layer_count)
    rng = np.random.default_rng(3)
    data = {}
    for k in ks:
        data[k] = rng.standard_normal(dim).astype(dtype)
        w.add_tensor(f"direction.{k}", data[k])
    for name, arr in (extra or {}).items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return data


def test_import_cvector_generator_file_drops_last_block_output_with_warning(tmp_path):
    path = tmp_path / "cvgen.gguf"
    data = _write_foreign_gguf(path, range(1, N_LAYERS))  # direction.1 .. direction.(L-1), layer_count = L-1
    with pytest.warns(UserWarning, match=rf"dropped direction\.{N_LAYERS - 1}.*last block"):
        v = SteeringVector.import_gguf(path)
    assert list(v.directions) == list(range(2, N_LAYERS))  # direction.K -> our layer K+1
    for k in range(1, N_LAYERS - 1):
        assert v.directions[k + 1].tobytes() == data[k].tobytes()
    assert v.model_type == "llama" and v.provenance["n_layers"] == N_LAYERS
    assert v.explained_variances == {i: 0.0 for i in range(2, N_LAYERS)}
    # an explicit model depth wins (here: a deeper model, so nothing is dropped)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deeper = SteeringVector.import_gguf(path, n_layers=N_LAYERS + 4)
    assert list(deeper.directions) == list(range(2, N_LAYERS + 1))


@pytest.mark.parametrize("suffix", [".svec", ".safetensors", ".gguf"])
def test_algebra_results_save_and_load(tmp_path, suffix):
    a, b = make(seed=1), make(seed=2)
    c = 0.5 * a - b
    back = SteeringVector.load(c.save(tmp_path / f"c{suffix}"))
    same_directions(c, back)
    assert back.provenance["formula"] == c.provenance["formula"]


def test_svec_file_is_json_with_provenance_and_stays_loadable_by_plain_json(tmp_path):
    v = make()
    data = json.loads(open(v.save(tmp_path / "p.svec")).read())
    assert set(data) == {"model_type", "directions", "explained_variances", "provenance"}
    # a reader that knows only the three original keys gets the same numbers
    dirs = {int(k): np.asarray(x, np.float32) for k, x in data["directions"].items()}
    for k in v.directions:
        assert dirs[k].tobytes() == v.directions[k].tobytes()


def test_provenance_recorded_by_train(tiny_llama, tokenizer):
    from activation_steering import SteeringDataset

    pairs = [(f"I love item {i}", f"I hate item {i}") for i in range(4)]
    ds = SteeringDataset(tokenizer, pairs, use_chat_template=False)
    v = SteeringVector.train(tiny_llama, tokenizer, ds, hidden_layer_ids=[1, 2])
    p = v.provenance
    cfg = tiny_llama.config
    assert p["model_type"] == cfg.model_type and p["hidden_size"] == cfg.hidden_size
    assert p["n_layers"] == cfg.num_hidden_layers and len(p["config_sha256"]) == 64
    assert p["method"] == "pca_pairwise" and p["pooling"] == "1" and p["n_pairs"] == len(ds.formatted_dataset)
    assert p["read_site"] == "decoder_layer_output" and p["add_site"] == "decoder_layer_input"


def test_steering_checks_the_vector_matches_the_model(tiny_llama, tokenizer):
    from activation_steering import MalleableModel

    mm = MalleableModel(tiny_llama, tokenizer)
    dim = tiny_llama.config.hidden_size
    n = tiny_llama.config.num_hidden_layers
    ok = SteeringVector("llama", {1: np.ones(dim, np.float32)}, {1: 1.0},
                        provenance={"model_type": "llama", "hidden_size": dim, "n_layers": n})
    mm.steer(ok, [1], 1.0)
    wrong_width = SteeringVector("llama", {1: np.ones(dim, np.float32)}, {1: 1.0},
                                 provenance={"model_type": "llama", "model_id": "big/model", "hidden_size": dim * 2})
    with pytest.raises(ValueError, match=rf"big/model with hidden size {dim * 2}.*{dim}"):
        mm.steer(wrong_width, [1], 1.0)
    deeper = SteeringVector("llama", {1: np.ones(dim, np.float32)}, {1: 1.0},
                            provenance={"model_type": "llama", "hidden_size": dim, "n_layers": n + 10})
    with pytest.warns(UserWarning, match=rf"n_layers: vector {n + 10}, model {n}"):
        mm.steer(deeper, [1], 1.0)
