"""The steer_layer op's behaviour operators (directional ablation, ablate-then-add) and
the token_norm strength unit, against the pure-torch twin over dtypes, masks, gates,
mode mixes and OOI; the ablation's own definition (h.d = 0 at steered positions,
nothing else changes); opcheck; torch.compile; argument checks. Runs on CUDA too
when available. docs/semantics.md ("Operators") defines what is tested here."""
import itertools

import pytest
import torch

from activation_steering import _core
from activation_steering.native import ops as _ops
from activation_steering.oracles import ops as _reference
from activation_steering.oracles.ops import MODE_ABLATE, MODE_ADD, MODE_TOKEN_NORM

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
OP = torch.ops.activation_steering.steer_layer
ADD, ABLATE, BOTH, TOKEN, BOTH_TOKEN = (MODE_ADD, MODE_ABLATE, MODE_ADD | MODE_ABLATE, MODE_ADD | MODE_TOKEN_NORM,
                                        MODE_ADD | MODE_ABLATE | MODE_TOKEN_NORM)
MODE_MIXES = [[ABLATE], [BOTH], [TOKEN], [BOTH_TOKEN], [ADD, ABLATE], [ABLATE, TOKEN, ADD], [BOTH, ABLATE, BOTH_TOKEN]]


def test_mode_bits_are_the_cores():
    """ops.cpp, the twin and as_plan.h name the same bits (the plan compiler writes them)."""
    assert (MODE_ADD, MODE_ABLATE, MODE_TOKEN_NORM) == (_core.MODE_ADD, _core.MODE_ABLATE, _core.MODE_TOKEN_NORM)


def _case(B, T, D, dtype, device, modes, gated, masked, seed):
    gen = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(B, T, D, generator=gen) * 3).to(dtype)
    M = len(modes)
    vecs = (torch.randn(M, D, generator=gen) * (0.05 if any(m & MODE_TOKEN_NORM for m in modes) else 2)).to(dtype)
    dirs = torch.nn.functional.normalize(torch.randn(M, D, generator=gen), dim=-1)
    state = torch.randint(0, 2, (B,), generator=gen)
    state[0], state[-1] = 0, 1  # some rows gated on and some off
    tables = None
    if gated:
        tables = torch.tensor([[0, 1] if k % 2 == 0 else [1, 0] for k in range(M)], dtype=torch.uint8)
    mask = None
    if masked:
        mask = torch.ones(B, T, dtype=torch.long)
        for b in range(B):
            mask[b, : b % T] = 0  # left padding
    to = (lambda t: None if t is None else t.to(device))
    return to(hidden), to(state), to(mask), to(vecs), to(tables), to(dirs)


def _tol(dtype):
    # float32: rounding of the projection's sum; half precision: one ulp of the narrow dtype after float32 math
    return dict(rtol=0, atol=2e-6) if dtype == torch.float32 else dict(rtol=2 ** -7, atol=2e-3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["f32", "bf16", "f16"])
@pytest.mark.parametrize("B,T,D", [(1, 1, 8), (4, 6, 32)])
def test_op_matches_twin(device, dtype, B, T, D):
    for i, (modes, gated, masked, ooi) in enumerate(itertools.product(MODE_MIXES, [False, True], [False, True],
                                                                      [False, True])):
        hidden, state, mask, vecs, tables, dirs = _case(B, T, D, dtype, device, modes, gated, masked, seed=i)
        got = OP(hidden, state.clone(), mask, None, None, None, vecs, tables, ooi, dirs, modes)
        ref = _reference.steer_layer(hidden, state.clone(), mask, None, None, None, vecs, tables, ooi, dirs, modes)
        assert got.dtype == dtype and got.shape == hidden.shape and got.is_contiguous()
        torch.testing.assert_close(got, ref, **_tol(dtype), msg=lambda m: f"{modes} gated={gated} ooi={ooi}: {m}")
        assert not torch.equal(got, hidden), modes  # every mix changes something


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["f32", "bf16", "f16"])
def test_ablation_zeroes_the_projection_and_changes_nothing_else(device, dtype):
    """h . d = 0 (float tolerance, computed in float32) at every position of a gated row;
    rows whose gate is off are bit-identical to the input."""
    gen = torch.Generator().manual_seed(5)
    B, T, D = 4, 7, 64
    d = torch.nn.functional.normalize(torch.randn(1, D, generator=gen), dim=-1)
    hidden = (torch.randn(B, T, D, generator=gen) * 4 + 20 * d).to(dtype)       # a large component along d
    state = torch.tensor([1, 0, 1, 0])
    table = torch.tensor([[0, 1]], dtype=torch.uint8)                           # "if C1 then ablate"
    out = OP(hidden.to(device), state.to(device), None, None, None, None, torch.zeros(1, D, dtype=dtype).to(device),
             table.to(device), False, d.to(device), [ABLATE]).cpu()
    before = hidden.float() @ d[0]
    after = out.float() @ d[0]
    assert before[[0, 2]].abs().min() > 5
    eps = torch.finfo(dtype).eps
    assert after[[0, 2]].abs().max() <= 4 * eps * hidden.float().norm(dim=-1).max(), after
    assert torch.equal(out[[1, 3]], hidden[[1, 3]])
    # the orthogonal complement is kept (up to the narrow dtype's rounding)
    perp = lambda x: x.float() - (x.float() @ d[0]).unsqueeze(-1) * d[0]        # noqa: E731
    torch.testing.assert_close(perp(out[[0, 2]]), perp(hidden[[0, 2]]), rtol=0,
                               atol=float(4 * eps * hidden.float().abs().max()))


@pytest.mark.parametrize("device", DEVICES)
def test_ablate_then_add_and_token_norm_definitions(device):
    """ablate_then_add: h - (h.d)d + v; token_norm: h + |h| v (|h| of the layer's input,
    also under ablate_then_add); ablations of the layer run before its additions."""
    gen = torch.Generator().manual_seed(9)
    B, T, D = 2, 3, 16
    h = torch.randn(B, T, D, generator=gen, dtype=torch.float64).float()
    d1, d2 = torch.nn.functional.normalize(torch.randn(2, D, generator=gen), dim=-1)
    v1, v2 = torch.randn(2, D, generator=gen) * 0.3
    st = torch.zeros(B, dtype=torch.long, device=device)
    call = lambda vecs, dirs, modes: OP(h.to(device), st.clone(), None, None, None, None,  # noqa: E731
                                        torch.stack(vecs).to(device), None, False, torch.stack(dirs).to(device),
                                        modes).cpu()
    ablate = lambda x, d: x - (x @ d).unsqueeze(-1) * d                       # noqa: E731
    norm = h.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(call([v1], [d1], [BOTH]), ablate(h, d1) + v1, rtol=0, atol=1e-6)
    torch.testing.assert_close(call([v1], [d1], [TOKEN]), h + norm * v1, rtol=0, atol=1e-6)
    torch.testing.assert_close(call([v1], [d1], [BOTH_TOKEN]), ablate(h, d1) + norm * v1, rtol=0, atol=1e-6)
    # B1 adds, B2 ablates: the ablation runs first whatever the order of the behaviours
    torch.testing.assert_close(call([v1, v2], [d1, d2], [ADD, ABLATE]), ablate(h, d2) + v1, rtol=0, atol=1e-6)
    torch.testing.assert_close(call([v2, v1], [d2, d1], [ABLATE, ADD]), ablate(h, d2) + v1, rtol=0, atol=1e-6)
    # two ablations: in behaviour order
    torch.testing.assert_close(call([v1, v2], [d1, d2], [ABLATE, ABLATE]), ablate(ablate(h, d1), d2), rtol=0,
                               atol=1e-6)


def test_plain_modes_equal_the_plain_call_bit_for_bit():
    """beh_modes all ADD is exactly the op without modes (the ActAdd path)."""
    hidden, state, mask, vecs, tables, dirs = _case(3, 5, 16, torch.float32, "cpu", [ADD, ADD], True, True, seed=1)
    for ooi in (False, True):
        plain = OP(hidden, state.clone(), mask, None, None, None, vecs, tables, ooi)
        assert torch.equal(OP(hidden, state.clone(), mask, None, None, None, vecs, tables, ooi, None, [ADD, ADD]),
                           plain)


def test_ooi_with_token_norm_keeps_every_norm():
    hidden, state, mask, vecs, _, dirs = _case(3, 5, 16, torch.float32, "cpu", [BOTH_TOKEN], False, True, seed=2)
    out = OP(hidden, state, mask, None, None, None, vecs * 20, None, True, dirs, [BOTH_TOKEN])
    assert (out.norm(dim=-1) <= hidden.norm(dim=-1) * (1 + 1e-6)).all()


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for i, (modes, gated, ooi) in enumerate([([ABLATE], True, False), ([BOTH, TOKEN], False, True),
                                             ([BOTH_TOKEN, ADD], True, True)]):
        hidden, state, mask, vecs, tables, dirs = _case(3, 6, 16, torch.float32, device, modes, gated, True, seed=i)
        torch.library.opcheck(OP.default, (hidden, state, mask, None, None, None, vecs, tables, ooi, dirs, modes))


@pytest.mark.parametrize("device", DEVICES)
def test_compiles_fullgraph_and_matches_eager(device):
    hidden, state, mask, vecs, tables, dirs = _case(3, 6, 16, torch.float32, device, [BOTH, ABLATE, TOKEN], True,
                                                    True, seed=4)
    modes = [BOTH, ABLATE, TOKEN]

    def f(h, st):
        return _ops.steer_layer(h * 1.5, st, mask, None, None, None, vecs, tables, True, dirs, modes).sum(-1)

    expect = f(hidden, state.clone())
    for backend in ("eager", "aot_eager"):
        torch._dynamo.reset()
        got = torch.compile(f, fullgraph=True, backend=backend)(hidden, state.clone())
        torch.testing.assert_close(got, expect, rtol=0, atol=1e-5)


def test_gradients_flow_through_the_twin():
    hidden, state, _, vecs, _, dirs = _case(2, 3, 8, torch.float32, "cpu", [BOTH_TOKEN], False, False, seed=3)
    h = hidden.clone().requires_grad_(True)
    out = _ops.steer_layer(h, state, None, None, None, None, vecs, None, False, dirs, [BOTH_TOKEN])
    out.sum().backward()
    assert h.grad is not None and torch.isfinite(h.grad).all()


def test_bad_modes_raise():
    h = torch.zeros(2, 3, 4)
    st = torch.zeros(2, dtype=torch.long)
    v = torch.zeros(1, 4)
    d = torch.ones(1, 4) / 2
    for bad in ([0], [8], [MODE_TOKEN_NORM], [MODE_ABLATE | MODE_TOKEN_NORM]):
        with pytest.raises(RuntimeError, match="beh_modes entries"):
            OP(h, st, None, None, None, None, v, None, False, d, bad)
    with pytest.raises(RuntimeError, match="one mode per behaviour row"):
        OP(h, st, None, None, None, None, v, None, False, d, [ADD, ADD])
    with pytest.raises(RuntimeError, match="needs beh_dirs"):
        OP(h, st, None, None, None, None, v, None, False, None, [ABLATE])
    with pytest.raises(RuntimeError, match="beh_dirs must be float32"):
        OP(h, st, None, None, None, None, v, None, False, d.double(), [ABLATE])
    with pytest.raises(RuntimeError, match="beh_dirs must be float32"):
        OP(h, st, None, None, None, None, v, None, False, torch.ones(1, 5), [ABLATE])
