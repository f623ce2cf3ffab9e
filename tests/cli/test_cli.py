"""The command line: train -> search -> steer on a saved fixture model, --help, and bad input exit codes."""
import json
import subprocess
import sys

import pytest

from activation_steering.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_data")
    data = {"examples": [["I love this, it is great", "I hate this, it is awful"],
                         ["What a wonderful day", "What a terrible day"],
                         ["The food was delicious", "The food was disgusting"],
                         ["She is very kind", "She is very cruel"]],
            "suffixes": [["Yes", "No"], ["Sure", "Never"]]}
    (d / "data.json").write_text(json.dumps(data))
    (d / "pos.txt").write_text("I love sunny days\nThis is wonderful\nWhat a great gift\n")
    (d / "neg.json").write_text(json.dumps(["I hate rain", "This is awful", "What a bad gift"]))
    (d / "prompts.txt").write_text("Tell me a story\nWhat is two plus two?\n")
    return d


def test_train_search_steer_round_trip(tiny_llama_dir, files, tmp_path, capsys):
    vec = tmp_path / "vec"
    assert main(["train", "--data", str(files / "data.json"), "--out", str(vec), "--model", str(tiny_llama_dir),
                 "--method", "pca_center", "--accumulate-last-x-tokens", "all"]) == 0
    assert (tmp_path / "vec.svec").is_file()
    capsys.readouterr()
    analysis = tmp_path / "analysis.json"
    assert main(["search", "--positive", str(files / "pos.txt"), "--negative", str(files / "neg.json"),
                 "--vector", str(tmp_path / "vec.svec"), "--model", str(tiny_llama_dir), "--layer-range", "1,4",
                 "--threshold-step", "0.05", "--out", str(analysis)]) == 0
    found = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(found) == {"layers", "threshold", "direction", "f1"} and analysis.is_file()
    out = tmp_path / "responses.jsonl"
    assert main(["steer", "--prompts", str(files / "prompts.txt"), "--behavior", str(tmp_path / "vec.svec"),
                 "--layers", "1-2", "--strength", "4", "--model", str(tiny_llama_dir), "--max-new-tokens", "5",
                 "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["Tell me a story", "What is two plus two?"]
    assert all(isinstance(r["response"], str) for r in rows)


@pytest.mark.parametrize("argv,message", [
    (["train", "--data", "/nonexistent.json", "--out", "x"], "no such file"),
    (["steer", "--prompts", "/nonexistent.txt"], "no such file"),
])
def test_missing_files_exit_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_data_and_vector_files_exit_2(tmp_path, files, tiny_llama_dir, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["train", "--data", str(bad), "--out", str(tmp_path / "v"), "--model", str(tiny_llama_dir)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    bad.write_text(json.dumps({"examples": [["only one"]]}))
    assert main(["train", "--data", str(bad), "--out", str(tmp_path / "v"), "--model", str(tiny_llama_dir)]) == 2
    assert "pairs" in capsys.readouterr().err
    broken = tmp_path / "broken.svec"
    broken.write_text('{"model_type": "llama", "directions": {"0": [1.0, 2.0]}')
    assert main(["steer", "--prompts", str(files / "prompts.txt"), "--behavior", str(broken),
                 "--model", str(tiny_llama_dir)]) == 2
    assert "broken.svec" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["demo", "train", "search", "steer"])
def test_help(command):
    r = subprocess.run([sys.executable, "-m", "activation_steering", command, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "usage" in r.stdout
