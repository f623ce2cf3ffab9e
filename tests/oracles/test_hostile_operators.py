"""The steer_layer op's operators (ablate, ablate_then_add) and token_norm unit against
the pure-torch twin over hostile inputs: NaN/Inf hidden states, an empty batch, one
position, gated-off rows, rows without real tokens, half precision whose token-norm
product overflows. The harness is tests/oracles/harness.py."""
import pytest
import torch
from harness import case, check_against_twin, close

from activation_steering.native import ops as _ops
from activation_steering.oracles import ops as _twin

D = 8
MIX = [3, 2 | 0, 1 | 4]  # ablate_then_add, ablate, add in token_norm


def _hidden(B, T, dtype=torch.float32, seed=0):
    return (torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed)) * 2).to(dtype)


def _args(hidden, mask=None, tables=False, ooi=False, modes=MIX):
    B = hidden.shape[0]
    gen = torch.Generator().manual_seed(3)
    vecs = (torch.randn(len(modes), D, generator=gen) * 0.3).to(hidden.dtype)
    dirs = torch.nn.functional.normalize(torch.randn(len(modes), D, generator=gen), dim=-1)
    tab = torch.tensor([[0, 1], [1, 0], [1, 1]], dtype=torch.uint8)[: len(modes)] if tables else None
    state = torch.arange(B, dtype=torch.long) % 2
    return (hidden, state, mask, None, None, None, vecs, tab, ooi, dirs, list(modes))


def _run(fn):
    def go(hidden, state, *rest):
        out = fn(hidden, state, *rest)
        return {"out": out.float(), "state": state}
    return go


@pytest.mark.parametrize("ooi", [False, True])
def test_operators_hostile_inputs(ooi):
    nan = _hidden(3, 4)
    nan[1, 2, 3] = float("nan")
    inf = _hidden(3, 4)
    inf[0, 0, 0] = float("inf")
    holes = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 0, 1]])
    cases = [
        case("nan hidden", *_args(nan, tables=True, ooi=ooi)),
        case("inf hidden", *_args(inf, tables=True, ooi=ooi)),
        case("empty batch", *_args(_hidden(0, 4), ooi=ooi)),
        case("one position", *_args(_hidden(3, 1), tables=True, ooi=ooi)),
        case("rows without real tokens", *_args(_hidden(3, 4), mask=holes, tables=True, ooi=ooi)),
        case("zero hidden", *_args(torch.zeros(2, 3, D), ooi=ooi)),
        case("unknown mode", *_args(_hidden(2, 3), ooi=ooi, modes=[3, 2, 9]), raises=RuntimeError),
        case("token_norm without add", *_args(_hidden(2, 3), ooi=ooi, modes=[3, 2, 4]), raises=RuntimeError),
    ]
    check_against_twin(_run(_ops.steer_layer), _run(_twin.steer_layer), cases, compare=close(atol=1e-6))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_operators_half_precision(dtype):
    big = _hidden(2, 3, dtype) * 3e3          # |h| ~ 1e4: |h| * 30 * v overflows float16
    overflow = _args(big, ooi=True)
    overflow = overflow[:6] + (overflow[6] * 100,) + overflow[7:]
    cases = [
        case("plain", *_args(_hidden(3, 4, dtype), tables=True)),
        case("left padded, OOI", *_args(_hidden(3, 4, dtype), mask=torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1],
                                                                                   [0, 0, 0, 1]]), ooi=True)),
        case("token_norm overflow, then OOI", *overflow),
    ]
    check_against_twin(_run(_ops.steer_layer), _run(_twin.steer_layer), cases, compare=close(atol=1e-6, rtol=2 ** -7))
