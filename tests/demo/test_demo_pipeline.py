"""The demo pipeline end to end on a fixture model and a small slice of the project data."""
import json

from activation_steering import demo
from activation_steering.conditions.thresholds import f1_score
from tiny_models import make_model, make_tokenizer


def test_demo_pipeline_produces_table_and_artefacts(tmp_path):
    full = demo.project_data()
    data = demo.DemoData("project-slice", full.questions[:6], full.refusal_openers[:3], full.compliance_openers[:3],
                         full.train_harmful[:8], full.train_harmless[:8], full.test_harmful[:4], full.test_harmless[:4])
    settings = demo.DemoSettings(n_questions=6, n_suffix_pairs=3, behavior_layer_ids=[1, 2],
                                 condition_layer_range=(1, 4), threshold_step=0.01, max_new_tokens=4, batch_size=4)
    results = demo.run(settings, data, model=make_model("llama"), tokenizer=make_tokenizer(), output_dir=tmp_path,
                       log=lambda *_: None)
    assert list(results["refusal_rates"]) == ["base", "steered", "CAST", "CAST-strict"]
    strict = results["strict_condition_point"]
    assert strict["train_false_positive_rate"] <= settings.strict_false_positive_rate
    assert 0.0 <= strict["test_true_positive_rate"] <= 1.0
    for rates in results["refusal_rates"].values():
        assert 0.0 <= rates["harmful"] <= 1.0 and 0.0 <= rates["harmless"] <= 1.0
    assert results["n_test"] == {"harmful": 4, "harmless": 4}
    for name in ["behavior_vector.svec", "condition_vector.svec", "condition_point_analysis.json",
                 "refusal_rates.png", "example_responses.json", "results.json"]:
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "results.json").read_text())["condition_point"]["layers"]
    table = demo.format_table(results)
    assert "CAST-strict" in table and "held-out" in table


def test_f1_score():
    import numpy as np

    pred = np.array([True, True, False, False])
    truth = np.array([True, False, True, False])
    assert f1_score(pred, truth) == 0.5
    assert f1_score(np.zeros(3, bool), np.ones(3, bool)) == 0.0
