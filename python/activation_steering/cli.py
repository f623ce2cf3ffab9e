"""Command line: `python -m activation_steering <command>` (also `activation-steering`).

Commands
  demo     the main job: CAST in miniature on the embedded model (README)
  train    JSON contrastive data -> steering vector (.svec, .gguf for llama.cpp, .safetensors)
  search   best condition point for a vector file from two prompt files
  steer    respond to prompts from a file with given vectors and settings

Exit codes: 0 success, 1 runtime failure, 2 bad arguments or bad input files.
Every command runs offline; --model takes a local Hugging Face model folder or
the name of an embedded model (default: smollm2-135m-instruct; also gemma3-270m,
a base model without a chat template: add --no-chat-template).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


class InputError(Exception):
    """A user-supplied file or argument is unusable (exit code 2)."""


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _load_model(path: str | None, no_chat_template: bool = False):
    """(model, tokenizer) for --model: None (the default embedded model), an embedded
    model's name, or a local folder. Without --no-chat-template the tokenizer must have
    a chat template: checked here, so the error names the flag, before any work."""
    from .models import REGISTRY, load_default_model

    if path is not None and not Path(path).is_dir() and path.lower() not in REGISTRY:
        raise InputError(f"--model {path}: not a folder nor an embedded model; pass a local Hugging Face model "
                         f"folder (nothing is downloaded) or one of {sorted(REGISTRY)}")
    if path is None or not Path(path).is_dir():
        model, tok = load_default_model(path)
    else:
        model, tok = _load_folder(path)
    if not no_chat_template and not getattr(tok, "chat_template", None):
        raise InputError(f"--model {path or 'default'}: its tokenizer has no chat template (a base model); pass "
                         "--no-chat-template to use the prompts as raw text (use_chat_template=False in Python)")
    return model, tok


def _load_folder(path: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not Path(path).is_dir():
        raise InputError(f"--model {path}: not a folder; pass a local Hugging Face model folder (nothing is downloaded)")
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
    return model, tok


def _read_json(path: str, what: str):
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} {path}: no such file")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{what} {path}: not valid JSON ({exc})") from None


def _read_prompts(path: str, what: str) -> list[str]:
    """Prompts from a .json list of strings, or a text file with one prompt per line."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} {path}: no such file")
    if p.suffix == ".json":
        data = _read_json(path, what)
        if not isinstance(data, list) or not all(isinstance(s, str) for s in data):
            raise InputError(f"{what} {path}: expected a JSON list of strings")
        prompts = data
    else:
        prompts = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise InputError(f"{what} {path}: contains no prompts")
    return prompts


def _load_vector(path: str, what: str):
    from .extract import SteeringVector

    try:
        return SteeringVector.load(path)
    except (ValueError, OSError) as exc:
        raise InputError(f"{what}: {exc}") from None


def _int_list(text: str) -> list[int]:
    """'10-15' or '3,5,7' or '10-12,20' -> list of ints."""
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:  # a range; a leading '-' is a negative id's sign
                head, tail = part[1:].split("-", 1)
                out.extend(range(int(part[0] + head), int(tail) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected layer ids like '10-15' or '3,5,7', got {text!r}") from None
    return out


def _pair_of(kind, what: str):
    """An argparse type for 'LO,HI' parsed with `kind` (float or int)."""
    def parse(text: str):
        try:
            a, b = (kind(x) for x in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected two {what} 'LO,HI', got {text!r}") from None
        return a, b

    return parse


_pair = _pair_of(float, "numbers")
_int_pair = _pair_of(int, "layer ids")


def _tokens(text: str):
    if text in ("all", "suffix-only", "user_text"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int, 'all', 'suffix-only' or 'user_text', got {text!r}") from None


# --------------------------------------------------------------------------- #
# commands
# --------------------------------------------------------------------------- #
def cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    settings = demo.DemoSettings()
    if args.max_new_tokens:
        settings.max_new_tokens = args.max_new_tokens
    data = demo.project_data()
    if args.ibm_demo_data:
        data = demo.ibm_demo_data(Path(args.ibm_demo_data))
    t0 = time.perf_counter()
    results = demo.run(settings, data, output_dir=args.output_dir)
    print(demo.format_table(results))
    print(f"\nartefacts in {args.output_dir}/ (vectors, condition_point_analysis.json, refusal_rates.png, "
          f"example_responses.json); total {time.perf_counter() - t0:.0f}s")
    return 0


def _check_out(path: str):
    """(path, format) that `train --out` will write; InputError now if it cannot be written."""
    from .vectors.files import save_target

    try:
        target, fmt = save_target(path)
    except (TypeError, ValueError) as exc:
        raise InputError(f"--out {path!r}: {exc}") from None
    if target.is_dir():
        raise InputError(f"--out {target}: is a folder; give a file name (.svec, .gguf or .safetensors)")
    from ._args import check_writable

    try:
        check_writable(target, "--out")
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return target, fmt


def cmd_train(args: argparse.Namespace) -> int:
    """Data file: {"examples": [[pos, neg], ...], "suffixes": [[pos_sfx, neg_sfx], ...] | [sfx, ...] | null}."""
    data = _read_json(args.data, "--data")
    if not isinstance(data, dict) or "examples" not in data:
        raise InputError(f"--data {args.data}: expected an object with an \"examples\" list of [positive, negative] pairs")
    examples = data["examples"]
    if (not isinstance(examples, list) or not examples
            or not all(isinstance(e, list) and len(e) == 2 and all(isinstance(s, str) for s in e) for e in examples)):
        raise InputError(f"--data {args.data}: \"examples\" must be a non-empty list of [positive, negative] string pairs")
    suffixes = data.get("suffixes")
    if suffixes is not None:
        if not isinstance(suffixes, list) or not suffixes:
            raise InputError(f"--data {args.data}: \"suffixes\" must be a non-empty list or null")
        suffixes = [tuple(s) if isinstance(s, list) else s for s in suffixes]
    from . import SteeringDataset, SteeringVector

    out_path, out_format = _check_out(args.out)  # before the (slow) training, not after it
    model, tok = _load_model(args.model, args.no_chat_template)
    dataset = SteeringDataset(tok, [tuple(e) for e in examples], suffixes=suffixes,
                              disable_suffixes=args.no_suffixes, use_chat_template=not args.no_chat_template)
    vector = SteeringVector.train(model, tok, dataset, method=args.method,
                                  accumulate_last_x_tokens=args.accumulate_last_x_tokens,
                                  hidden_layer_ids=args.layers, batch_size=args.batch_size,
                                  save_analysis=args.save_analysis is not None,
                                  output_dir=args.save_analysis or "activation_steering_figures",
                                  normalize=not args.raw, probe_l2=args.probe_l2,
                                  probe_standardize=args.probe_standardize)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = vector.save(out_path)
        except OSError as exc:  # e.g. a read-only or virtual file system the up-front check could not see
            raise InputError(f"--out {out_path}: cannot write: {exc.strerror or exc}") from None
        back = SteeringVector.load(out)  # a .gguf cannot hold layers 0 and 1
    written = len(back.directions)
    for w in caught:
        print(f"activation_steering train: warning: {w.message}", file=sys.stderr)
    print(f"wrote {out} ({out_format}): {written} layers, {len(dataset.formatted_dataset)} pairs")
    if back.residual_norms:
        # the scale strength_unit="residual_norm" multiplies (docs/strength_units.md)
        print("residual norms (median at each layer's input): "
              + ", ".join(f"{layer}: {value:.4g}" for layer, value in back.residual_norms.items()))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from . import MalleableModel

    positives = _read_prompts(args.positive, "--positive")
    negatives = _read_prompts(args.negative, "--negative")
    vector = _load_vector(args.vector, "--vector")
    model, tok = _load_model(args.model, args.no_chat_template)
    mm = MalleableModel(model, tok)
    point = mm.find_best_condition_point(
        positives, negatives, vector, layer_range=args.layer_range, max_layers_to_combine=args.max_combine,
        threshold_range=args.threshold_range, threshold_step=args.threshold_step,
        save_analysis=args.out is not None, file_path=args.out,
        condition_threshold_comparison_mode=args.mode, exact=args.exact,
        use_chat_template=not args.no_chat_template, layer_combination=args.layer_combination)
    layers, threshold, direction, f1 = point
    # `steer` installs this point with --condition-layers LAYERS --threshold THRESHOLD --comparator DIRECTION
    # --condition-layer-combination LAYER_COMBINATION (and the same --mode); json keeps every digit of the threshold
    print(json.dumps({"layers": list(layers), "threshold": float(threshold), "direction": direction, "f1": float(f1),
                      "layer_combination": point.layer_combination}))
    return 0


# steer's keyword arguments -> the steer command's flags (for the API's error messages)
_STEER_FLAGS = {"behavior_vector_strength": "--strength", "behavior_layer_ids": "--layers",
                "behavior_operator": "--operator", "strength_unit": "--strength-unit", "behavior_vector": "--behavior",
                "condition_layer_ids": "--condition-layers", "condition_vector_threshold": "--threshold",
                "condition_comparator_threshold_is": "--comparator", "condition_threshold_comparison_mode": "--mode",
                "condition_layer_combination": "--condition-layer-combination", "condition_vector": "--condition"}


def _as_flags(message: str) -> str:
    import re

    return re.sub(r"\b(" + "|".join(sorted(_STEER_FLAGS, key=len, reverse=True)) + r")\b",
                  lambda m: _STEER_FLAGS[m.group(1)], message)


def _steer(mm, args: argparse.Namespace, behavior, condition) -> None:
    mm.steer(behavior_vector=behavior, behavior_layer_ids=args.layers, behavior_vector_strength=args.strength,
             condition_vector=condition, condition_layer_ids=args.condition_layers if condition else None,
             condition_vector_threshold=args.threshold, condition_comparator_threshold_is=args.comparator,
             condition_threshold_comparison_mode=args.mode, behavior_operator=args.operator,
             strength_unit=args.strength_unit,
             condition_layer_combination=args.condition_layer_combination)


def cmd_steer(args: argparse.Namespace) -> int:
    from . import MalleableModel

    prompts = _read_prompts(args.prompts, "--prompts")
    behavior = _load_vector(args.behavior, "--behavior") if args.behavior else None
    condition = _load_vector(args.condition, "--condition") if args.condition else None
    if condition is not None and (args.condition_layers is None or args.threshold is None):
        raise InputError("--condition needs --condition-layers and --threshold")
    if behavior is None and (args.operator != "add" or args.strength_unit != "absolute"):
        flag = "--operator" if args.operator != "add" else "--strength-unit"
        raise InputError(f"{flag} needs --behavior (without one the model is not steered)")
    if condition is None and args.condition_layer_combination != "or":
        raise InputError("--condition-layer-combination needs --condition")
    model, tok = _load_model(args.model, args.no_chat_template)
    mm = MalleableModel(model, tok)
    if behavior is not None:
        try:
            _steer(mm, args, behavior, condition)
        except ValueError as exc:  # the API's message, in the flags' names
            raise InputError(_as_flags(str(exc))) from None
    settings = {"max_new_tokens": args.max_new_tokens, "do_sample": False, "repetition_penalty": 1.1}
    responses = mm.respond_batch(prompts, settings=settings, batch_size=args.batch_size,
                                 use_chat_template=not args.no_chat_template,
                                 show_progress=sys.stderr.isatty())
    sink = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    try:
        for p, r in zip(prompts, responses):
            sink.write(json.dumps({"prompt": p, "response": r}) + "\n")
    finally:
        if args.out:
            sink.close()
    return 0


# --------------------------------------------------------------------------- #
# parser
# --------------------------------------------------------------------------- #
def _prog() -> str:
    """`activation-steering` when run as the console script, else `python -m activation_steering`."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if name.startswith("activation-steering"):
        return "activation-steering"
    return "python -m activation_steering"


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the module docstring's layout; every flag's help ends with its default."""


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of the command line (every flag documented with its default)."""
    from ._version import __version__

    parser = argparse.ArgumentParser(prog=prog or _prog(), description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    embedded = "or embedded model name (default: smollm2-135m-instruct)"

    p = sub.add_parser("demo", help="CAST demo on the embedded model (the README's main job)",
                       formatter_class=_HelpFormatter)
    p.add_argument("--output-dir", default="cast_demo_output", help="where artefacts go (default: %(default)s)")
    p.add_argument("--ibm-demo-data", metavar="DIR",
                   help="use the reference library's demo data from DIR instead (default: the project's data)")
    p.add_argument("--max-new-tokens", type=int, default=0,
                   help="override the generation length; 0 keeps the demo's own setting (default: %(default)s)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a steering vector: JSON data -> .svec / .gguf / .safetensors",
                       formatter_class=_HelpFormatter,
                       description='DATA is JSON: {"examples": [[positive, negative], ...], '
                                   '"suffixes": [[pos_suffix, neg_suffix], ...] or [suffix, ...] or null}; null (or no '
                                   '"suffixes") means the built-in default suffixes: pass --no-suffixes for none.')
    p.add_argument("--data", required=True, help="JSON data file (see above); required")
    p.add_argument("--out", required=True,
                   help="output file: NAME.svec (JSON; appended when there is no known suffix), NAME.gguf "
                        "(llama.cpp control vector: --control-vector-scaled NAME.gguf:STRENGTH) or "
                        "NAME.safetensors; required")
    p.add_argument("--model", help=f"local Hugging Face model folder {embedded}")
    p.add_argument("--method", default="pca_pairwise",
                   choices=["pca_pairwise", "pca_center", "pca_diff", "mean_diff", "probe"],
                   help="how the direction per layer is extracted: a PCA recipe, mean_diff (CAA) or probe "
                        "(logistic regression) (default: %(default)s)")
    p.add_argument("--raw", action="store_true",
                   help="mean_diff only: keep the raw mean difference (CAA's magnitude) instead of a unit vector "
                        "(default: off)")
    p.add_argument("--probe-l2", type=float, default=1.0, metavar="L2",
                   help="probe only: L2 penalty on the weights, scikit-learn's C = 1/L2 (default: %(default)s)")
    p.add_argument("--probe-standardize", action="store_true",
                   help="probe only: fit on standardised features (default: off)")
    p.add_argument("--accumulate-last-x-tokens", type=_tokens, default=1, metavar="K|all|suffix-only|user_text",
                   help="which tokens are pooled per string: the last K, all, the suffix only, or the user's message "
                        "only (default: %(default)s)")
    p.add_argument("--layers", type=_int_list, help="layer ids, e.g. '10-15' or '3,5,7' (default: all layers)")
    p.add_argument("--batch-size", type=int, default=32, help="strings per forward batch (default: %(default)s)")
    p.add_argument("--no-suffixes", action="store_true",
                   help="disable suffix expansion: pairs are used as given (default: off)")
    p.add_argument("--no-chat-template", action="store_true",
                   help="use the raw strings instead of the tokenizer's chat template (default: off)")
    p.add_argument("--save-analysis", metavar="DIR", help="write PCA figures into DIR (default: none)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("search", help="find the best condition point for a condition vector",
                       formatter_class=_HelpFormatter)
    p.add_argument("--positive", required=True,
                   help="prompts where the condition should fire (.json list or .txt, one per line); required")
    p.add_argument("--negative", required=True, help="prompts where it should not (same formats); required")
    p.add_argument("--vector", required=True, help="condition vector .svec; required")
    p.add_argument("--model", help=f"local Hugging Face model folder {embedded}")
    p.add_argument("--layer-range", type=_int_pair, default=None, metavar="LO,HI",
                   help="layers searched, LO inclusive, HI exclusive (default: every layer)")
    p.add_argument("--max-combine", type=int, default=1,
                   help="most layers combined into one condition (default: %(default)s)")
    p.add_argument("--threshold-range", type=_pair, default=(0.0, 1.0), metavar="LO,HI",
                   help="threshold grid bounds (default: 0.0,1.0)")
    p.add_argument("--threshold-step", type=float, default=0.01, help="threshold grid step (default: %(default)s)")
    p.add_argument("--mode", choices=["mean", "last", "user_text"], default="mean",
                   help="pooling of the prompt's hidden states before the similarity: all real tokens, the last one, "
                        "or the user's message only (default: %(default)s)")
    p.add_argument("--layer-combination", choices=["or", "and", "both"], default="or",
                   help="how a combination's layers combine: a prompt is positive when ANY layer meets the condition "
                        "(or), when EVERY layer does (and), or search both, OR winning at equal F1 "
                        "(default: %(default)s)")
    p.add_argument("--exact", action="store_true",
                   help="search every distinct threshold, not just the grid (default: off)")
    p.add_argument("--out", help="write the analysis JSON here (default: none)")
    p.add_argument("--no-chat-template", action="store_true",
                   help="use the prompts as raw text (needed for a model without a chat template, e.g. gemma3-270m) "
                        "(default: off)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("steer", help="respond to prompts with steering applied (JSON lines out)",
                       formatter_class=_HelpFormatter)
    p.add_argument("--prompts", required=True, help="prompts (.json list or .txt, one per line); required")
    p.add_argument("--behavior", help="behaviour vector .svec (default: none, the unsteered model)")
    p.add_argument("--layers", type=_int_list, default=list(range(10, 16)),
                   help="behaviour layers, e.g. '10-15' (default: 10-15)")
    p.add_argument("--strength", type=float, default=1.0, help="behaviour vector strength (default: %(default)s)")
    p.add_argument("--operator", choices=["add", "ablate", "ablate_then_add"], default="add",
                   help="what the behaviour does at its layers: add strength * vector (ActAdd), ablate (remove the "
                        "vector's direction; strength-free) or ablate_then_add (default: %(default)s)")
    p.add_argument("--strength-unit", choices=["absolute", "residual_norm", "token_norm"], default="absolute",
                   help="unit of --strength: absolute, a fraction of the layer's median residual norm recorded by "
                        "train (residual_norm), or of each position's own norm (token_norm) (default: %(default)s)")
    p.add_argument("--condition", help="condition vector .svec (default: none, steer unconditionally)")
    p.add_argument("--condition-layers", type=_int_list,
                   help="condition layers, e.g. '5' (default: none; required with --condition)")
    p.add_argument("--threshold", type=float,
                   help="condition threshold (default: none; required with --condition)")
    p.add_argument("--condition-layer-combination", choices=["or", "and"], default="or",
                   help="with several condition layers: met when ANY layer meets it (or) or only when EVERY layer "
                        "does (and); a search line's layer_combination (default: %(default)s)")
    p.add_argument("--comparator", choices=["larger", "smaller"], default="larger",
                   help="'larger': the condition is met when the similarity is below the threshold; "
                        "'smaller': above it (default: %(default)s)")
    p.add_argument("--mode", choices=["mean", "last", "user_text"], default="mean",
                   help="pooling of the prompt's hidden states for the condition: all real tokens, the last one, or "
                        "the user's message only (default: %(default)s)")
    p.add_argument("--model", help=f"local Hugging Face model folder {embedded}")
    p.add_argument("--max-new-tokens", type=int, default=50, help="tokens generated per prompt (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts generated together (default: %(default)s)")
    p.add_argument("--out", help="JSON lines output file (default: stdout)")
    p.add_argument("--no-chat-template", action="store_true",
                   help="use the text as is (needed for a model without a chat template, e.g. gemma3-270m) "
                        "(default: off)")
    p.set_defaults(func=cmd_steer)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"{_prog()} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as exc:
        print(f"{_prog()} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
