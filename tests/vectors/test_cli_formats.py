"""`train --out` writes the format its suffix names, and a bad --out fails before training."""
import json

import numpy as np
import pytest

from activation_steering import SteeringVector
from activation_steering.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("fmt_data")
    (d / "data.json").write_text(json.dumps({"examples": [["I love this", "I hate this"],
                                                          ["A wonderful day", "A terrible day"],
                                                          ["So kind", "So cruel"]], "suffixes": None}))
    return d / "data.json"


def test_train_out_formats_agree(tiny_llama_dir, data, tmp_path, capsys):
    got = {}
    for name in ("v.svec", "v.safetensors", "v.gguf"):
        assert main(["train", "--data", str(data), "--out", str(tmp_path / name), "--model", str(tiny_llama_dir),
                     "--layers", "0-3"]) == 0
        got[name] = SteeringVector.load(tmp_path / name)
    captured = capsys.readouterr()
    assert "v.gguf (gguf)" in captured.out
    # the residual norms the file holds, per layer (gguf: layers 2 and 3 only)
    norms_line = [line for line in captured.out.splitlines() if line.startswith("residual norms")][-1]
    assert [part.split(":")[0] for part in norms_line.split(": ", 1)[1].split(", ")] == ["2", "3"]
    assert "layer(s) [0, 1] cannot be expressed" in captured.err  # the GGUF warning reaches the user
    ref = got["v.svec"]
    assert ref.provenance["method"] == "pca_pairwise" and ref.provenance["n_layers"] >= 4
    for name, v in got.items():
        for layer, d in v.directions.items():
            assert d.tobytes() == ref.directions[layer].tobytes(), (name, layer)
    assert sorted(got["v.gguf"].directions) == [2, 3]
    assert got["v.svec"].residual_norms == got["v.safetensors"].residual_norms
    assert list(got["v.svec"].residual_norms) == [0, 1, 2, 3]
    assert got["v.gguf"].residual_norms == {k: got["v.svec"].residual_norms[k] for k in (2, 3)}


def test_unwritable_out_fails_before_training(tiny_llama_dir, data, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", "--data", str(data), "--out", str(blocker / "v.gguf"), "--model", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "not a writable folder" in err  # not the --model error: checked first
    (tmp_path / "adir.svec").mkdir()
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "adir.svec"), "--model", "/nonexistent"]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_train_reports_the_layers_the_gguf_holds_and_unwritable_out_exits_2(tiny_llama_dir, tmp_path, monkeypatch, capsys):
    """A .gguf cannot hold layers 0 and 1: the summary counts what the file holds. A write that
    fails after the up-front check (e.g. a virtual file system) is a one-line error, exit 2."""
    import json

    from activation_steering import cli
    from activation_steering.extract import SteeringVector

    data = tmp_path / "pairs.json"
    data.write_text(json.dumps({"examples": [["I love it", "I hate it"], ["Great day", "Awful day"]]}))
    out = tmp_path / "v.gguf"
    rc = cli.main(["train", "--data", str(data), "--out", str(out), "--model", str(tiny_llama_dir), "--no-suffixes"])
    assert rc == 0
    held = len(SteeringVector.load(out).directions)
    assert held == 2                                                   # tiny llama: 4 layers, 0 and 1 dropped
    assert f": {held} layers" in capsys.readouterr().out

    def fail(*_a, **_k):
        raise PermissionError(30, "Read-only file system")
    monkeypatch.setattr(SteeringVector, "save", fail)
    rc = cli.main(["train", "--data", str(data), "--out", str(tmp_path / "w.svec"), "--model", str(tiny_llama_dir),
                   "--no-suffixes"])
    assert rc == 2
    assert "cannot write" in capsys.readouterr().err
