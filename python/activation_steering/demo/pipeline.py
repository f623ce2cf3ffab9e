"""The main job: CAST in miniature on the embedded SmolLM2-135M-Instruct.

Reproduces the shape of "Programming Refusal with Conditional Activation
Steering" (Table 3): a refusal behaviour vector makes the model refuse nearly
everything; conditioning it on a harmful-prompt condition vector keeps refusals
on harmful prompts while harmless prompts are answered.

Pipeline (every step uses the public API, exactly as a user would):
  1. behaviour vector: benign questions x (refusal opener, compliance opener)
     suffix pairs, method pca_center, suffix-only pooling;
  2. condition vector: harmful vs harmless TRAIN prompts, an L2-regularised
     logistic-regression probe (method "probe"), pooled over all tokens;
  3. find_best_condition_point on the TRAIN prompts (exact F1 search) over the
     swept condition layer range; the condition layers must not come after the
     first behaviour layer (a behaviour layer that runs before the condition is
     decided leaves the prompt pass, and so the first reply token, unsteered:
     docs/semantics.md);
  4. held-out TEST prompts under three settings — base, steered and
     conditionally steered (CAST) — generated with respond_batch; refusal and
     fluency judged by `judge.is_refusal` / `judge.is_fluent`;
  5. a table of refusal rates with the share of refusals that are fluent, the
     condition's F1 and ROC AUC on the train and the held-out prompts, and
     artefacts (vectors, analysis JSON, bar chart, example responses).

Every setting comes from the train-only sweeps recorded in data/DATA_CARD.md
(`benchmarks/sweep_cast_conditions.py`, `benchmarks/sweep_cast_behaviour.py`;
cross-validation inside the train split, the test prompts never choose anything).

Not here: a benchmark of CAST in general (one small model, one judge, one data
set), the sweeps themselves, or any model download - everything runs offline
on the embedded model.
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
    # The window starts at the condition layer (15): behaviour layers before it would run
    # before the condition is known on the prompt pass. Strength 8 refused train harmful
    # prompts most in that window (DATA_CARD.md; more strength pushes the replies off the
    # refusal phrasing).
    behavior_layer_ids: list[int] = field(default_factory=lambda: list(range(15, 21)))
    behavior_vector_strength: float = 8.0
    # Where find_best_condition_point looks (half-open). None: (1, first behaviour
    # layer + 1). The train-only cross-validation put the best condition at layer 15
    # (DATA_CARD.md); a condition layer may equal the first behaviour layer (conditions
    # are evaluated before the behaviour is added there), never exceed it.
    condition_layer_range: tuple[int, int] | None = (15, 16)
    max_layers_to_combine: int = 1
    threshold_range: tuple[float, float] = (0.0, 0.1)
    threshold_step: float = 0.0001
    # How the condition vector is pooled when it is trained ("all" tokens of each
    # prompt) and how the condition is read at run time ("mean" over the prompt).
    condition_accumulate: str = "all"
    condition_mode: str = "mean"
    # A logistic-regression probe separated the classes best out of fold (ROC AUC
    # 0.97 vs 0.92-0.94 for pca_pairwise / mean_diff); probe_l2=10 (C=0.1)
    # generalised better than 1, 100 or more (DATA_CARD.md).
    condition_method: str = "probe"
    condition_probe_l2: float = 10.0
    # Exact threshold search (sort-and-sweep over every distinct value) instead of
    # the grid: the grid (0, 0.1) missed the best thresholds of this model.
    exact_search: bool = True
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
    from ..conditions.thresholds import f1_score
    from .judge import is_fluent, is_refusal
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
    if hi - 1 > min(settings.behavior_layer_ids):
        raise ValueError(f"condition_layer_range={settings.condition_layer_range} reaches past the first behaviour "
                         f"layer {min(settings.behavior_layer_ids)}: the prompt pass would run the earlier behaviour "
                         "layers before the condition is known (docs/semantics.md); end the range at or before it")
    condition_dataset = SteeringDataset(tokenizer=tokenizer, examples=list(zip(data.train_harmful, data.train_harmless)),
                                        suffixes=None, disable_suffixes=True)
    probe_kwargs = {"probe_l2": settings.condition_probe_l2} if settings.condition_method == "probe" else {}
    condition_vector = SteeringVector.train(model=model, tokenizer=tokenizer, steering_dataset=condition_dataset,
                                            method=settings.condition_method,
                                            accumulate_last_x_tokens=settings.condition_accumulate,
                                            hidden_layer_ids=list(range(lo, hi)), **probe_kwargs)
    timings["condition_vector"] = time.perf_counter() - t
    log(f"[3/5] condition vector ({settings.condition_method}) from {len(condition_dataset.formatted_dataset)} pairs "
        f"in {timings['condition_vector']:.1f}s")

    # -- 3. condition point on TRAIN prompts --------------------------------- #
    t = time.perf_counter()
    malleable = MalleableModel(model=model, tokenizer=tokenizer)
    best_layers, best_threshold, best_comparator, train_f1 = malleable.find_best_condition_point(
        positive_strings=data.train_harmful, negative_strings=data.train_harmless,
        condition_vector=condition_vector, layer_range=settings.condition_layer_range,
        max_layers_to_combine=settings.max_layers_to_combine, threshold_range=settings.threshold_range,
        threshold_step=settings.threshold_step, save_analysis=True,
        file_path=str(out / "condition_point_analysis.json"),
        condition_threshold_comparison_mode=settings.condition_mode, exact=settings.exact_search)
    train_prompts = data.train_harmful + data.train_harmless
    train_truth = np.array([True] * len(data.train_harmful) + [False] * len(data.train_harmless))
    train_sims = condition_similarities(malleable, train_prompts, condition_vector, best_layers, settings.condition_mode)
    timings["condition_search"] = time.perf_counter() - t
    test_prompts = data.test_harmful + data.test_harmless
    truth = np.array([True] * len(data.test_harmful) + [False] * len(data.test_harmless))
    test_sims = condition_similarities(malleable, test_prompts, condition_vector, best_layers, settings.condition_mode)
    pred = condition_met(test_sims, best_threshold, best_comparator).any(axis=1)
    test_f1 = f1_score(pred, truth)
    train_auc = condition_roc_auc(train_sims, train_truth, best_comparator)
    test_auc = condition_roc_auc(test_sims, truth, best_comparator)
    log(f"[4/5] condition point: layers {best_layers}, threshold {best_threshold:.5f}, '{best_comparator}', "
        f"F1 train {train_f1:.3f} / held-out {test_f1:.3f}, ROC AUC train {train_auc:.3f} / held-out {test_auc:.3f} "
        f"({timings['condition_search']:.1f}s)")

    # -- 4. the settings on held-out prompts ---------------------------------- #
    gen_settings = {"max_new_tokens": settings.max_new_tokens, "do_sample": False, "repetition_penalty": 1.1}
    steer_common = dict(behavior_vector=behavior_vector, behavior_layer_ids=settings.behavior_layer_ids,
                        behavior_vector_strength=settings.behavior_vector_strength)
    configurations = {
        "base": None,
        "steered": dict(steer_common),
        "CAST": dict(steer_common, condition_vector=condition_vector, condition_layer_ids=best_layers,
                     condition_vector_threshold=best_threshold, condition_comparator_threshold_is=best_comparator,
                     condition_threshold_comparison_mode=settings.condition_mode),
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
        fluent = np.array([is_fluent(r) for r in responses])
        rows[name] = {"harmful": float(refused[truth].mean()), "harmless": float(refused[~truth].mean()),
                      "refusals": int(refused.sum()), "fluent_refusals": int((refused & fluent).sum())}
        examples[name] = [{"prompt": p, "response": r, "refusal": bool(f), "fluent": bool(fl), "harmful": bool(h)}
                          for p, r, f, fl, h in zip(test_prompts, responses, refused, fluent, truth)]
        log(f"      {name:8s} harmful {rows[name]['harmful']:6.1%}  harmless {rows[name]['harmless']:6.1%}  "
            f"fluent refusals {rows[name]['fluent_refusals']}/{rows[name]['refusals']}")
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
                            "direction": best_comparator, "train_f1": float(train_f1), "test_f1": float(test_f1),
                            "train_roc_auc": train_auc, "test_roc_auc": test_auc,
                            "test_true_positive_rate": float(pred[truth].mean()),
                            "test_false_positive_rate": float(pred[~truth].mean())},
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


def condition_roc_auc(sims: np.ndarray, truth: np.ndarray, comparator: str) -> float:
    """ROC AUC of a one-layer condition: P(a harmful prompt scores as more harmful than a
    harmless one), ties counted half. The score is the similarity oriented by the
    comparator ("larger": met when sim < threshold, so -sim; "smaller": sim).
    Several layers: the most-met layer (max of the oriented scores; the OR rule).

    Args:
        sims: float [N, n_layers], the condition similarities.
        truth: bool [N], True for the positive (harmful) prompts.
        comparator: "larger" or "smaller".
    Returns:
        float in [0, 1] (the Mann-Whitney U statistic / (n_pos * n_neg)).
    """
    s = np.asarray(sims, np.float64)
    score = (-s if comparator == "larger" else s).max(axis=1)
    pos, neg = score[truth], score[~truth]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def format_table(results: dict) -> str:
    rows = results["refusal_rates"]
    cp = results["condition_point"]
    lines = ["", f"Refusal rate on held-out prompts ({results['data']} data, "
                 f"{results['n_test']['harmful']} harmful / {results['n_test']['harmless']} harmless)",
             f"{'setting':9s} {'harmful':>9s} {'harmless':>9s} {'fluent refusals':>16s}", "-" * 46]
    for name, r in rows.items():
        fluent = f"{r['fluent_refusals']}/{r['refusals']}" if r["refusals"] else "-"
        lines.append(f"{name:9s} {r['harmful']:9.1%} {r['harmless']:9.1%} {fluent:>16s}")
    lines += ["", f"condition (CAST): layers {cp['layers']}, threshold {cp['threshold']:.5f} ({cp['direction']}), "
                  f"F1 train {cp['train_f1']:.3f}, held-out {cp['test_f1']:.3f}; ROC AUC train {cp['train_roc_auc']:.3f}, "
                  f"held-out {cp['test_roc_auc']:.3f}; fires on held-out {cp['test_true_positive_rate']:.1%} harmful / "
                  f"{cp['test_false_positive_rate']:.1%} harmless"]
    return "\n".join(lines)
