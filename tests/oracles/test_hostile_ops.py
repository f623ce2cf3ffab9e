"""The ATen ops (steer_layer, condition_similarity, pool_spans) against their
pure-torch twins (activation_steering/oracles/ops.py) over hostile inputs: NaN/Inf
hidden states, an empty batch, one row, one position, fp16/bf16, a zero
direction, rows without any real token. The harness is tests/oracles/harness.py."""
import pytest
import torch
from harness import case, check_against_twin, close

from activation_steering.native import ops as _ops
from activation_steering.oracles import ops as _twin

D = 8


def _hidden(B, T, dtype=torch.float32, seed=0):
    return (torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed)) * 2).to(dtype)


def _cond(K=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.randn(K, D, generator=gen)
    codes = torch.tensor([[1 << k, k % 2, (k // 2) % 2] for k in range(K)], dtype=torch.long)
    return dirs, torch.zeros(K), codes


def _steer_args(hidden, mask=None, cond=True, beh=True, tables=False, ooi=True, dirs=None):
    B = hidden.shape[0]
    c_dirs, c_thr, c_codes = _cond() if cond else (None, None, None)
    if cond and dirs is not None:
        c_dirs = dirs
    vecs = torch.ones(2, D, dtype=hidden.dtype) * 0.5 if beh else None
    tab = torch.tensor([[0, 1, 0, 1], [1, 1, 1, 1]], dtype=torch.uint8) if beh and tables else None
    return (hidden, torch.zeros(B, dtype=torch.long), mask, c_dirs, c_thr, c_codes, vecs, tab, ooi)


def _run(fn):
    def go(hidden, state, *rest):
        out = fn(hidden, state, *rest)
        # the op updates the state in place: compare it too (outputs as float32: numpy has no bfloat16)
        return {"out": out.float(), "state": state}
    return go


def test_steer_layer_hostile_inputs():
    nan = _hidden(3, 4)
    nan[1, 2, 3] = float("nan")
    inf = _hidden(3, 4)
    inf[0, 0, 0] = float("inf")
    holes = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 0, 1]])  # row 1 has no real token
    cases = [
        case("nan hidden", *_steer_args(nan)),
        case("inf hidden", *_steer_args(inf)),
        case("empty batch", *_steer_args(_hidden(0, 4))),
        case("empty batch, masked", *_steer_args(_hidden(0, 4), mask=torch.zeros(0, 4, dtype=torch.long))),
        case("one row", *_steer_args(_hidden(1, 5), tables=True)),
        case("one position", *_steer_args(_hidden(3, 1), mask=torch.ones(3, 1, dtype=torch.long), tables=True)),
        case("rows without real tokens", *_steer_args(_hidden(3, 4), mask=holes, tables=True)),
        case("all masked", *_steer_args(_hidden(2, 4), mask=torch.zeros(2, 4, dtype=torch.long))),
        case("zero direction", *_steer_args(_hidden(3, 4), dirs=torch.zeros(2, D))),
        case("conditions only", *_steer_args(_hidden(3, 4), beh=False)),
        case("behaviours only", *_steer_args(_hidden(3, 4), cond=False)),
        case("no behaviour rows", *_steer_args(_hidden(2, 3), cond=False)[:6], torch.zeros(0, D), None, True),
        case("wrong state dtype", _hidden(2, 3), torch.zeros(2, dtype=torch.int32), *_steer_args(_hidden(2, 3))[2:],
             raises=RuntimeError),
        case("vector of another dtype", *_steer_args(_hidden(2, 3, torch.bfloat16))[:6], torch.ones(1, D), None, False,
             raises=RuntimeError),
    ]
    check_against_twin(_run(_ops.steer_layer), _run(_twin.steer_layer), cases, compare=close(atol=1e-6))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_steer_layer_half_precision(dtype):
    big = _hidden(2, 3, dtype) * 1e4  # fp16: hidden + vector can overflow before the OOI rescale
    huge = _steer_args(big)
    huge = huge[:6] + (torch.full((2, D), 6e4, dtype=dtype),) + huge[7:]
    cases = [
        case("plain", *_steer_args(_hidden(3, 4, dtype), tables=True)),
        case("left padded", *_steer_args(_hidden(3, 4, dtype), mask=torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1],
                                                                                  [0, 0, 0, 1]]))),
        case("overflow into inf, then OOI", *huge),
    ]
    check_against_twin(_run(_ops.steer_layer), _run(_twin.steer_layer), cases,
                       compare=close(atol=1e-6, rtol=2 ** -7))


def test_condition_similarity_hostile_inputs():
    dirs, _, codes = _cond(K=3)
    nan = _hidden(2, 3)
    nan[0, 1, 1] = float("nan")
    cases = [
        case("nan hidden", nan, None, dirs, codes),
        case("empty batch", _hidden(0, 3), None, dirs, codes),
        case("one row, one position", _hidden(1, 1), torch.ones(1, 1), dirs, codes),
        case("no real token", _hidden(2, 3), torch.zeros(2, 3), dirs, codes),
        case("zero direction", _hidden(2, 3), None, torch.zeros(3, D), codes),
        case("fp16", _hidden(2, 3, torch.float16), None, dirs, codes),
        case("bf16 left padded", _hidden(2, 3, torch.bfloat16), torch.tensor([[0, 1, 1], [1, 1, 1]]), dirs, codes),
        case("no conditions", _hidden(2, 3), None, torch.zeros(0, D), torch.zeros(0, 3, dtype=torch.long)),
        case("float64 directions", _hidden(2, 3), None, dirs.double(), codes, raises=RuntimeError),
        case("mask of another width", _hidden(2, 3), torch.ones(2, 4), dirs, codes, raises=RuntimeError),
    ]
    check_against_twin(_ops.condition_similarity, _twin.condition_similarity, cases, compare=close(atol=2e-6))


def test_condition_similarity_user_text_hostile_inputs():
    """Pooling code 2 ("user_text"): the mean over positions whose token_mask is 2."""
    dirs, _, _ = _cond(K=3)
    codes = torch.tensor([[1, 0, 2], [2, 1, 0], [4, 0, 1]])
    marked = torch.tensor([[0, 1, 2, 2], [1, 2, 1, 1]])
    nan = _hidden(2, 4)
    nan[0, 0, 1] = float("nan")  # on a padding position: pooled by no mode
    nan[0, 1, 2] = float("nan")  # on a real token outside the message: only "mean" and "last" see it
    cases = [
        case("user text marked", _hidden(2, 4), marked, dirs, codes),
        case("no message token", _hidden(2, 4), torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]), dirs, codes),
        case("no mask: every position", _hidden(2, 4), None, dirs, codes),
        case("nan outside the message", nan, marked, dirs, codes),
        case("fp16", _hidden(2, 4, torch.float16), marked, dirs, codes),
    ]
    check_against_twin(_ops.condition_similarity, _twin.condition_similarity, cases, compare=close(atol=2e-6))


def test_pool_spans_hostile_inputs():
    nan = _hidden(2, 4)
    nan[1, 0, 0] = float("nan")
    span = lambda *v: torch.tensor(v, dtype=torch.long)  # noqa: E731
    cases = [
        case("nan in span", nan, span(0, 0), span(4, 2)),
        case("empty span", _hidden(2, 4), span(2, 0), span(2, 0)),
        case("empty batch", _hidden(0, 4), span(), span()),
        case("one position", _hidden(2, 1), span(0, 0), span(1, 1)),
        case("bf16", _hidden(2, 4, torch.bfloat16), span(1, 0), span(3, 4)),
        case("int32 spans", _hidden(2, 4), span(0, 0).int(), span(1, 1).int(), raises=RuntimeError),
    ]
    check_against_twin(_ops.pool_spans, _twin.pool_spans, cases, compare=close(atol=1e-6))
