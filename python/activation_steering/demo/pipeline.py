"""The main job: CAST in miniature on the embedded SmolLM2-135M-Instruct.

Reproduces the shape of "Programming Refusal with Conditional Activation
Steering" (Table 3): a refusal behaviour vector makes the model refuse nearly
everything; conditioning it on a harmful-prompt condition vector keeps refusals
on harmful prompts while harmless prompts are answered.

Pipeline (every step uses the public API, exactly as a user would):
  1. behaviour vector: benign questions x (refusal opener, compliance opener)
     suffix pairs, method pca_center, suffix-only pooling;
  2. condition vector: harmful vs harmless TRAIN prompts, pca_pairwise, all tokens;
  3. find_best_condition_point on the TRAIN prompts, over the layers up to the
     first behaviour layer (a condition read later than that would leave the
     earlier behaviour layers unsteered on the prompt pass, SPEC 4);
  4. held-out TEST prompts under four settings — base, steered, conditionally
     steered at the F1-optimal condition point (CAST), and at a stricter
     threshold chosen on TRAIN prompts to fire on at most 5% of harmless ones
     (CAST-strict) — generated with respond_batch; refusal judged by
     `judge.is_refusal`;
  5. a table of refusal rates, the condition F1 on the held-out prompts, and
     artefacts (vectors, analysis JSON, bar chart, example responses).

Layers and strength come from the sweep recorded in data/DATA_CARD.md (run on
training prompts only; `benchmarks/sweep_demo_settings.py` reproduces it).
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np


@dataclass
class DemoSettings:
    """Everything the demo chooses. Defaults are the swept values (DATA_CARD.md)."""

    n_questions: int = 32              # benign questions for the behaviour dataset
    n_suffix_pairs: int = 8            # refusal/compliance opener pairs used as suffixes
    behavior_layer_ids: list[int] = field(default_factory=lambda: list(range(10, 16)))
    behavior_vector_strength: float = 12.0
    # None: (1, first behaviour layer + 1), so the condition is known before any
    # behaviour layer runs on the prompt pass (a condition layer may equal the first
    # behaviour layer: conditions are evaluated before the behaviour is added there).
    condition_layer_range: tuple[int, int] | None = None
    max_layers_to_combine: int = 1
    threshold_range: tuple[float, float] = (0.0, 0.1)
    threshold_step: float = 0.0001
    condition_mode: str = "mean"
    # The project's harmful/harmless pairs are minimal pairs (same topic, one harmful
    # twist): pca_pairwise keeps only the within-pair difference, where the topic
    # cancels. pca_center/pca_diff scored far lower in the sweep (DATA_CARD.md).
    condition_method: str = "pca_pairwise"
    # Exact threshold search (sort-and-sweep over every distinct value) instead of
    # the grid: the grid (0, 0.1) missed the best thresholds of this model.
    exact_search: bool = True
    # The "CAST-strict" row: same condition layers and direction, threshold moved
    # (on TRAIN prompts) to fire on at most this share of harmless prompts. The
    # F1-optimal point weighs a false alarm like a miss; for refusal a false alarm
    # (refusing a harmless request) is the costlier error.
    strict_false_positive_rate: float = 0.05
    max_new_tokens: int = 32
    batch_size: int = 16
    seed: int = 0


@dataclass
class DemoData:
    name: str
    questions: list[str]
    refusal_openers: list[str]
    compliance_openers: list[str]
    train_harmful: list[str]
    train_harmless: list[str]
    test_harmful: list[str]
    test_harmless: list[str]


def _read_package_json(name: str):
    with resources.files("activation_steering").joinpath("data", name).open("r", encoding="utf-8") as f:
        return json.load(f)


def project_data() -> DemoData:
    """The data this project wrote (see data/DATA_CARD.md)."""
    cond = _read_package_json("condition_harmful.json")
    beh = _read_package_json("behavior_refusal.json")
    return DemoData("project", beh["questions"], beh["refusal_openers"], beh["compliance_openers"],
                    cond["train"]["harmful"], cond["train"]["harmless"],
                    cond["test"]["harmful"], cond["test"]["harmless"])


def ibm_demo_data(root: Path, n_train: int = 200, n_test: int = 64, n_questions: int = 100, seed: int = 0) -> DemoData:
    """The reference library's public demo data (read from ../shared, never copied)."""
    rng = random.Random(seed)
    cond = json.loads((root / "condition_harmful.json").read_text())
    beh = json.loads((root / "behavior_refusal.json").read_text())
    alpaca = json.loads((root / "alpaca.json").read_text())
    train = rng.sample(cond["train"], n_train)
    test = rng.sample(cond["test"], n_test)
    questions = [q["question"] for q in rng.sample(alpaca["train"], n_questions)]
    return DemoData("ibm-demo", questions, beh["non_compliant_responses"], beh["compliant_responses"],
                    [r["harmful"] for r in train], [r["harmless"] for r in train],
                    [r["harmful"] for r in test], [r["harmless"] for r in test])


def run(settings: DemoSettings | None = None, data: DemoData | None = None, model=None, tokenizer=None,
        output_dir: str | Path = "cast_demo_output", log=print) -> dict:
    """Run the whole demo; returns the results dict that is also saved as results.json."""
    from .. import MalleableModel, SteeringDataset, SteeringVector
    from ..conditions.search import condition_similarities
    from ..conditions.thresholds import f1_score, threshold_at_false_positive_rate
    from .judge import is_refusal
    from ..conditions.similarity import condition_met
    from ..models import load_default_model

    settings = settings or DemoSettings()
    data = data or project_data()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    if model is None:
        model, tokenizer = load_default_model()
    timings["load_model"] = time.perf_counter() - t0
    log(f"[1/5] model loaded in {timings['load_model']:.1f}s ({data.name} data)")

    # -- 1. behaviour vector ------------------------------------------------ #
    t = time.perf_counter()
    questions = random.Random(settings.seed).sample(data.questions, min(settings.n_questions, len(data.questions)))
    pair_ids = random.Random(settings.seed + 1).sample(range(len(data.refusal_openers)), min(settings.n_suffix_pairs, len(data.refusal_openers)))
    suffixes = [(data.refusal_openers[i], data.compliance_openers[i]) for i in pair_ids]
    behavior_dataset = SteeringDataset(tokenizer=tokenizer, examples=[(q, q) for q in questions], suffixes=suffixes)
    behavior_vector = SteeringVector.train(model=model, tokenizer=tokenizer, steering_dataset=behavior_dataset,
                                           method="pca_center", accumulate_last_x_tokens="suffix-only",
                                           hidden_layer_ids=settings.behavior_layer_ids)
    timings["behavior_vector"] = time.perf_counter() - t
    log(f"[2/5] behaviour vector from {len(behavior_dataset.formatted_dataset)} pairs in {timings['behavior_vector']:.1f}s")

    # -- 2. condition vector ------------------------------------------------- #
    t = time.perf_counter()
    if settings.condition_layer_range is None:
        settings = replace(settings, condition_layer_range=(1, min(settings.behavior_layer_ids) + 1))
    lo, hi = settings.condition_layer_range
    condition_dataset = SteeringDataset(tokenizer=tokenizer, examples=list(zip(data.train_harmful, data.train_harmless)),
                                        suffixes=None, disable_suffixes=True)
    condition_vector = SteeringVector.train(model=model, tokenizer=tokenizer, steering_dataset=condition_dataset,
                                            method=settings.condition_method, accumulate_last_x_tokens="all",
                                            hidden_layer_ids=list(range(lo, hi)))
    timings["condition_vector"] = time.perf_counter() - t
    log(f"[3/5] condition vector from {len(condition_dataset.formatted_dataset)} pairs in {timings['condition_vector']:.1f}s")

    # -- 3. condition point on TRAIN prompts --------------------------------- #
    t = time.perf_counter()
    malleable = MalleableModel(model=model, tokenizer=tokenizer)
    best_layers, best_threshold, best_direction, train_f1 = malleable.find_best_condition_point(
        positive_strings=data.train_harmful, negative_strings=data.train_harmless,
        condition_vector=condition_vector, layer_range=settings.condition_layer_range,
        max_layers_to_combine=settings.max_layers_to_combine, threshold_range=settings.threshold_range,
        threshold_step=settings.threshold_step, save_analysis=True,
        file_path=str(out / "condition_point_analysis.json"),
        condition_threshold_comparison_mode=settings.condition_mode, exact=settings.exact_search)
    train_sims = condition_similarities(malleable, data.train_harmful + data.train_harmless, condition_vector,
                                        best_layers, settings.condition_mode)
    n_train = len(data.train_harmful)
    strict_threshold, strict_tpr, strict_fpr = threshold_at_false_positive_rate(
        train_sims[:n_train], train_sims[n_train:], best_direction, settings.strict_false_positive_rate)
    timings["condition_search"] = time.perf_counter() - t
    test_prompts = data.test_harmful + data.test_harmless
    truth = np.array([True] * len(data.test_harmful) + [False] * len(data.test_harmless))
    test_sims = condition_similarities(malleable, test_prompts, condition_vector, best_layers, settings.condition_mode)

    pred = condition_met(test_sims, best_threshold, best_direction).any(axis=1)
    strict_pred = condition_met(test_sims, strict_threshold, best_direction).any(axis=1)
    test_f1 = f1_score(pred, truth)
    log(f"[4/5] condition point: layers {best_layers}, threshold {best_threshold:.4f}, '{best_direction}', "
        f"train F1 {train_f1:.3f}, held-out F1 {test_f1:.3f} ({timings['condition_search']:.1f}s); strict "
        f"threshold {strict_threshold:.4f} fires on {strict_tpr:.0%} of train harmful, {strict_fpr:.0%} of harmless")

    # -- 4. the settings on held-out prompts ---------------------------------- #
    gen_settings = {"max_new_tokens": settings.max_new_tokens, "do_sample": False, "repetition_penalty": 1.1}
    steer_common = dict(behavior_vector=behavior_vector, behavior_layer_ids=settings.behavior_layer_ids,
                        behavior_vector_strength=settings.behavior_vector_strength)
    cast_common = dict(steer_common, condition_vector=condition_vector, condition_layer_ids=best_layers,
                       condition_comparator_threshold_is=best_direction,
                       condition_threshold_comparison_mode=settings.condition_mode)
    configurations = {
        "base": None,
        "steered": dict(steer_common),
        "CAST": dict(cast_common, condition_vector_threshold=best_threshold),
        "CAST-strict": dict(cast_common, condition_vector_threshold=strict_threshold),
    }
    rows, examples = {}, {}
    t = time.perf_counter()
    for name, steer_kwargs in configurations.items():
        malleable.reset_leash_to_default()
        if steer_kwargs:
            malleable.steer(**steer_kwargs)
        responses = malleable.respond_batch(test_prompts, settings=gen_settings, batch_size=settings.batch_size,
                                            show_progress=True)
        refused = np.array([is_refusal(r) for r in responses])
        rows[name] = {"harmful": float(refused[truth].mean()), "harmless": float(refused[~truth].mean())}
        examples[name] = [{"prompt": p, "response": r, "refusal": bool(f), "harmful": bool(h)}
                          for p, r, f, h in zip(test_prompts, responses, refused, truth)]
        log(f"      {name:11s} harmful {rows[name]['harmful']:6.1%}  harmless {rows[name]['harmless']:6.1%}")
    malleable.reset_leash_to_default()
    timings["generation"] = time.perf_counter() - t
    log(f"[5/5] generated {len(configurations) * len(test_prompts)} responses in {timings['generation']:.1f}s")

    # -- 5. artefacts -------------------------------------------------------- #
    behavior_vector.save(str(out / "behavior_vector.svec"))
    condition_vector.save(str(out / "condition_vector.svec"))
    results = {
        "data": data.name, "settings": asdict(settings),
        "n_test": {"harmful": int(truth.sum()), "harmless": int((~truth).sum())},
        "refusal_rates": rows,
        "condition_point": {"layers": list(best_layers), "threshold": float(best_threshold),
                            "direction": best_direction, "train_f1": float(train_f1), "test_f1": float(test_f1)},
        "strict_condition_point": {
            "threshold": strict_threshold, "max_false_positive_rate": settings.strict_false_positive_rate,
            "train_true_positive_rate": strict_tpr, "train_false_positive_rate": strict_fpr,
            "test_true_positive_rate": float(strict_pred[truth].mean()),
            "test_false_positive_rate": float(strict_pred[~truth].mean()),
            "test_f1": f1_score(strict_pred, truth)},
        "timings_s": timings,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "example_responses.json").write_text(json.dumps(
        {name: ex[:4] + [e for e in ex if not e["harmful"]][:4] for name, ex in examples.items()}, indent=2))
    (out / "all_responses.json").write_text(json.dumps(examples, indent=2))
    _bar_chart(rows, out / "refusal_rates.png", title=f"Refusal on held-out prompts ({data.name} data)")
    return results


def _bar_chart(rows: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(x - 0.2, [rows[n]["harmful"] * 100 for n in names], 0.4, label="harmful prompts", color="#c0392b")
    ax.bar(x + 0.2, [rows[n]["harmless"] * 100 for n in names], 0.4, label="harmless prompts", color="#2e86c1")
    ax.set_xticks(x, names)
    ax.set_ylabel("refusal rate (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_table(results: dict) -> str:
    rows = results["refusal_rates"]
    cp = results["condition_point"]
    lines = ["", f"Refusal rate on held-out prompts ({results['data']} data, "
                 f"{results['n_test']['harmful']} harmful / {results['n_test']['harmless']} harmless)",
             f"{'setting':12s} {'harmful':>9s} {'harmless':>9s}", "-" * 32]
    for name, r in rows.items():
        lines.append(f"{name:12s} {r['harmful']:9.1%} {r['harmless']:9.1%}")
    lines += ["", f"condition (CAST): layers {cp['layers']}, threshold {cp['threshold']:.4f} ({cp['direction']}), "
                  f"F1 train {cp['train_f1']:.3f}, held-out {cp['test_f1']:.3f}"]
    sp = results.get("strict_condition_point")
    if sp:
        lines.append(f"condition (CAST-strict): threshold {sp['threshold']:.4f}, fires on train "
                     f"{sp['train_true_positive_rate']:.0%} harmful / {sp['train_false_positive_rate']:.0%} harmless, "
                     f"held-out {sp['test_true_positive_rate']:.0%} / {sp['test_false_positive_rate']:.0%} "
                     f"(F1 {sp['test_f1']:.3f})")
    return "\n".join(lines)
