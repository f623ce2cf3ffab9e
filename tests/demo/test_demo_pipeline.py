"""The demo pipeline end to end on a fixture model and a small slice of the project data."""
import json

import numpy as np

from activation_steering import SteeringVector, demo
from activation_steering.conditions.search import condition_similarities
from activation_steering.conditions.similarity import condition_met
from activation_steering.conditions.thresholds import f1_score
from activation_steering.demo.judge import is_fluent, is_refusal
from activation_steering.demo.pipeline import condition_roc_auc
import pytest
from tiny_models import make_model, make_tokenizer


def test_demo_pipeline_produces_table_and_artefacts(tmp_path):
    full = demo.project_data()
    data = demo.DemoData("project-slice", full.questions[:6], full.refusal_openers[:3], full.compliance_openers[:3],
                         full.train_harmful[:8], full.train_harmless[:8], full.test_harmful[:4], full.test_harmless[:4])
    settings = demo.DemoSettings(n_questions=6, n_suffix_pairs=3, behavior_layer_ids=[2, 3],
                                 condition_layer_range=(1, 3), threshold_step=0.01, max_new_tokens=4, batch_size=4)
    model, tokenizer = make_model("llama"), make_tokenizer()
    results = demo.run(settings, data, model=model, tokenizer=tokenizer, output_dir=tmp_path, log=lambda *_: None)
    assert list(results["refusal_rates"]) == ["base", "steered", "CAST"]
    assert results["n_test"] == {"harmful": 4, "harmless": 4}
    # each refusal rate and fluency count is the judges' verdict on the responses written next to it
    responses = json.loads((tmp_path / "all_responses.json").read_text())
    for name, rates in results["refusal_rates"].items():
        for side, harmful in (("harmful", True), ("harmless", False)):
            rows = [r for r in responses[name] if r["harmful"] is harmful]
            assert len(rows) == 4 and rates[side] == np.mean([is_refusal(r["response"]) for r in rows])
        refused = [r["response"] for r in responses[name] if is_refusal(r["response"])]
        assert rates["refusals"] == len(refused)
        assert rates["fluent_refusals"] == sum(is_fluent(r) for r in refused)
    # the held-out figures of the condition point are its predictions at its threshold
    point = results["condition_point"]
    cond = SteeringVector.load(str(tmp_path / "condition_vector.svec"))
    assert cond.provenance["method"] == settings.condition_method == "probe"
    sims = condition_similarities(model, data.test_harmful + data.test_harmless, cond, point["layers"],
                                  settings.condition_mode, tokenizer=tokenizer)
    truth = np.array([True] * 4 + [False] * 4)
    pred = condition_met(sims, point["threshold"], point["direction"]).any(axis=1)
    assert point["test_f1"] == f1_score(pred, truth)
    assert point["test_true_positive_rate"] == pred[truth].mean()
    assert point["test_false_positive_rate"] == pred[~truth].mean()
    assert point["test_roc_auc"] == condition_roc_auc(sims, truth, point["direction"])
    for name in ["behavior_vector.svec", "condition_vector.svec", "condition_point_analysis.json",
                 "refusal_rates.png", "example_responses.json", "results.json"]:
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "results.json").read_text())["condition_point"]["layers"]
    table = demo.format_table(results)
    assert "CAST" in table and "held-out" in table and "fluent refusals" in table and "ROC AUC" in table


def test_demo_refuses_a_condition_read_after_the_first_behaviour_layer(tmp_path):
    full = demo.project_data()
    data = demo.DemoData("project-slice", full.questions[:4], full.refusal_openers[:2], full.compliance_openers[:2],
                         full.train_harmful[:4], full.train_harmless[:4], full.test_harmful[:2], full.test_harmless[:2])
    settings = demo.DemoSettings(n_questions=4, n_suffix_pairs=2, behavior_layer_ids=[1, 2],
                                 condition_layer_range=(1, 3), max_new_tokens=2, batch_size=2)
    with pytest.raises(ValueError, match="condition_layer_range"):
        demo.run(settings, data, model=make_model("llama"), tokenizer=make_tokenizer(), output_dir=tmp_path,
                 log=lambda *_: None)
    assert not (tmp_path / "results.json").exists()


def test_condition_roc_auc_is_the_pairwise_share():
    rng = np.random.default_rng(0)
    sims = np.round(rng.normal(size=(30, 1)), 1)              # rounded: ties occur
    truth = rng.random(30) < 0.5
    for comparator, score in (("smaller", sims[:, 0]), ("larger", -sims[:, 0])):
        pairs = [(p, n) for p in score[truth] for n in score[~truth]]
        expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
        assert condition_roc_auc(sims, truth, comparator) == pytest.approx(expected, abs=1e-12)
    assert condition_roc_auc(np.array([[0.1], [0.2]]), np.array([False, True]), "smaller") == 1.0
    assert condition_roc_auc(np.array([[0.1], [0.2]]), np.array([False, True]), "larger") == 0.0


def test_f1_score():
    import numpy as np

    pred = np.array([True, True, False, False])
    truth = np.array([True, False, True, False])
    assert f1_score(pred, truth) == 0.5
    assert f1_score(np.zeros(3, bool), np.ones(3, bool)) == 0.0
