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
    assert set(found) == {"layers", "threshold", "direction", "f1", "layer_combination"} and analysis.is_file()
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


# --------------------------------------------------------------------------- #
# the steering options of the Python API, on the command line
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def trained(tiny_llama_dir, files, tmp_path_factory):
    """A vector trained by the CLI (it records residual norms) and the same tiny model in Python."""
    from activation_steering import MalleableModel, SteeringVector

    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = tmp_path_factory.mktemp("cli_vec")
    assert main(["train", "--data", str(files / "data.json"), "--out", str(d / "vec.svec"),
                 "--model", str(tiny_llama_dir), "--method", "pca_center"]) == 0
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, local_files_only=True).eval()
    return d / "vec.svec", SteeringVector.load(d / "vec.svec"), MalleableModel(model, tok)


_GEN = ["--max-new-tokens", "6", "--batch-size", "2"]


def _cli_steer(tiny_llama_dir, files, tmp_path, extra):
    out = tmp_path / "r.jsonl"
    assert main(["steer", "--prompts", str(files / "prompts.txt"), "--model", str(tiny_llama_dir), "--out", str(out),
                 *_GEN, *extra]) == 0
    return [json.loads(line)["response"] for line in out.read_text().splitlines()]


def _api_steer(mm, files, **steer_kwargs):
    prompts = [line for line in (files / "prompts.txt").read_text().splitlines() if line]
    mm.steer(**steer_kwargs)
    try:
        return mm.respond_batch(prompts, settings={"max_new_tokens": 6, "do_sample": False,
                                                   "repetition_penalty": 1.1}, batch_size=2, show_progress=False)
    finally:
        mm.reset_leash_to_default()


@pytest.mark.parametrize("flags,kwargs", [
    (["--operator", "ablate"], {"behavior_operator": "ablate"}),
    (["--operator", "ablate_then_add", "--strength", "6"],
     {"behavior_operator": "ablate_then_add", "behavior_vector_strength": 6.0}),
    (["--strength-unit", "residual_norm", "--strength", "1.5"],
     {"strength_unit": "residual_norm", "behavior_vector_strength": 1.5}),
    (["--strength-unit", "token_norm", "--strength", "1.5"],
     {"strength_unit": "token_norm", "behavior_vector_strength": 1.5}),
])
def test_steer_operator_and_unit_match_python(trained, tiny_llama_dir, files, tmp_path, flags, kwargs):
    path, vec, mm = trained
    layers = ["--layers", "1-2"]
    got = _cli_steer(tiny_llama_dir, files, tmp_path, ["--behavior", str(path), *layers, *flags])
    want = _api_steer(mm, files, behavior_vector=vec, behavior_layer_ids=[1, 2], **kwargs)
    assert got == want
    i = next(i for i, f in enumerate(flags) if f in ("--operator", "--strength-unit"))
    plain = _cli_steer(tiny_llama_dir, files, tmp_path, ["--behavior", str(path), *layers, *flags[:i], *flags[i + 2:]])
    assert got != plain  # the flag changed the result


def _search(tiny_llama_dir, files, vec_path, capsys, combination):
    capsys.readouterr()
    assert main(["search", "--positive", str(files / "pos.txt"), "--negative", str(files / "neg.json"),
                 "--vector", str(vec_path), "--model", str(tiny_llama_dir), "--layer-range", "1,4",
                 "--max-combine", "2", "--threshold-step", "0.05", "--exact",
                 "--layer-combination", combination]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_search_and_line_round_trips_into_steer(trained, tiny_llama_dir, files, tmp_path, capsys):
    """The line equals the Python point (tagged "and"), and its fields as steer flags install point.steer_kwargs().
    (On this tiny model the best AND point has one layer; two-layer AND gating is the test below.)"""
    path, vec, mm = trained
    line = _search(tiny_llama_dir, files, path, capsys, "and")
    pos = [s for s in (files / "pos.txt").read_text().splitlines() if s]
    neg = json.loads((files / "neg.json").read_text())
    point = mm.find_best_condition_point(pos, neg, vec, layer_range=(1, 4), max_layers_to_combine=2,
                                         threshold_step=0.05, exact=True, layer_combination="and")
    assert line == {"layers": point.layers, "threshold": point.threshold, "direction": point.direction,
                    "f1": point.f1, "layer_combination": point.layer_combination}
    assert line["layer_combination"] == "and"
    # the line's fields, as steer flags, install exactly point.steer_kwargs()
    got = _cli_steer(tiny_llama_dir, files, tmp_path, [
        "--behavior", str(path), "--layers", "1-3", "--strength", "8", "--condition", str(path),
        "--condition-layers", ",".join(map(str, line["layers"])), "--threshold", repr(line["threshold"]),
        "--comparator", line["direction"], "--condition-layer-combination", line["layer_combination"]])
    want = _api_steer(mm, files, behavior_vector=vec, behavior_layer_ids=[1, 2, 3], behavior_vector_strength=8.0,
                      **point.steer_kwargs())
    assert got == want


def test_search_layer_combination_or_is_the_default(trained, tiny_llama_dir, files, capsys):
    path, _, _ = trained
    line = _search(tiny_llama_dir, files, path, capsys, "or")
    assert line["layer_combination"] == "or"
    assert set(line) == {"layers", "threshold", "direction", "f1", "layer_combination"}


def test_condition_layer_combination_and_changes_the_gate(trained, tiny_llama_dir, files, tmp_path):
    """Condition layers 1,2 at threshold 0.025, "smaller" (met iff sim > 0.025): on this tiny model "Tell me a
    story" has sims about 0.023 / 0.028 there (met at layer 2 only), "What is two plus two?" about 0.25 / 0.24
    (met at both). OR steers both prompts, AND only the second; each equals the Python API."""
    path, vec, mm = trained
    common = ["--behavior", str(path), "--layers", "2-3", "--strength", "8", "--condition", str(path),
              "--condition-layers", "1,2", "--threshold", "0.025", "--comparator", "smaller"]
    got = {}
    for combination in ("or", "and"):
        got[combination] = _cli_steer(tiny_llama_dir, files, tmp_path,
                                      [*common, "--condition-layer-combination", combination])
        want = _api_steer(mm, files, behavior_vector=vec, behavior_layer_ids=[2, 3], behavior_vector_strength=8.0,
                          condition_vector=vec, condition_layer_ids=[1, 2], condition_vector_threshold=0.025,
                          condition_comparator_threshold_is="smaller", condition_layer_combination=combination)
        assert got[combination] == want
    unsteered = _cli_steer(tiny_llama_dir, files, tmp_path, [])
    assert got["and"][0] == unsteered[0] != got["or"][0]  # met at one layer only: AND does not steer it
    assert got["and"][1] == got["or"][1] != unsteered[1]  # met at both: steered either way


@pytest.mark.parametrize("argv,flag", [
    (["steer", "--prompts", "p.txt", "--operator", "subtract"], "--operator"),
    (["steer", "--prompts", "p.txt", "--strength-unit", "percent"], "--strength-unit"),
    (["steer", "--prompts", "p.txt", "--condition-layer-combination", "xor"], "--condition-layer-combination"),
    (["search", "--positive", "a", "--negative", "b", "--vector", "v", "--layer-combination", "any"],
     "--layer-combination"),
])
def test_bad_choice_exits_2_naming_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {flag}: invalid choice" in err


@pytest.mark.parametrize("extra,flag", [
    (["--operator", "ablate"], "--operator"),
    (["--strength-unit", "token_norm"], "--strength-unit"),
    (["--condition-layer-combination", "and"], "--condition-layer-combination"),
])
def test_new_flags_without_what_they_act_on_exit_2(files, extra, flag, capsys):
    assert main(["steer", "--prompts", str(files / "prompts.txt"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err


def test_api_errors_exit_2_naming_the_flag(trained, tiny_llama_dir, files, tmp_path, capsys):
    """steer's ValueErrors come out as one line in the flags' names, not the keyword arguments'."""
    path, vec, _ = trained
    data = json.loads(path.read_text())
    assert data.get("residual_norms")
    data.pop("residual_norms")
    old = tmp_path / "old.svec"  # a file from before residual norms were recorded
    old.write_text(json.dumps(data))
    base = ["steer", "--prompts", str(files / "prompts.txt"), "--layers", "1-2", "--model", str(tiny_llama_dir)]
    for extra, flag in [(["--behavior", str(old), "--strength-unit", "residual_norm"], "--strength-unit"),
                        (["--behavior", str(path), "--condition", str(path), "--condition-layers", "1,1",
                          "--threshold", "0.1", "--condition-layer-combination", "and"], "--condition-layers")]:
        capsys.readouterr()
        assert main([*base, *extra]) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]  # above it: the model loader's progress bar
        assert last.startswith("python -m activation_steering steer: error:") and flag in last, last
        assert "strength_unit" not in last and "condition_layer_ids" not in last, last
