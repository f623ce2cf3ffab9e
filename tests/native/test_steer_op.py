"""The steer_layer ATen op against its pure-torch twin (_reference.steer_layer),
over random shapes, masks, dtypes and every option combination; opcheck; and
torch.compile tracing without graph breaks. Runs on CUDA too when available."""
import itertools

import pytest
import torch

from activation_steering.native import ops as _ops
from activation_steering.oracles import ops as _reference
from activation_steering.conditions.similarity import condition_met, condition_similarity

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
OP = torch.ops.activation_steering.steer_layer


def _mask(kind: str, B: int, T: int, gen: torch.Generator) -> torch.Tensor | None:
    if kind == "none":
        return None
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    pos = torch.arange(T).unsqueeze(0)
    if kind == "left":
        return (pos >= (T - lengths).unsqueeze(1)).long()
    if kind == "right":
        return (pos < lengths.unsqueeze(1)).long()
    m = torch.rand(B, T, generator=gen) < 0.6  # holes, and maybe a row without any real token
    return m


def _case(B, T, D, dtype, device, mask_kind, n_cond, n_beh, tables, ooi, seed):
    gen = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(B, T, D, generator=gen) * 2).to(dtype)
    mask = _mask(mask_kind, B, T, gen)
    cond = (None, None, None)
    if n_cond:
        dirs = torch.randn(n_cond, D, generator=gen)
        codes = torch.tensor([[1 << k, k % 2, (k // 2) % 2] for k in range(n_cond)], dtype=torch.long)
        # thresholds between the rows' similarities, so that some rows meet each condition and some do not
        real = mask.bool() if mask is not None else torch.ones(B, T, dtype=torch.bool)
        thr = []
        for k in range(n_cond):
            sims = []
            for b in range(B):
                rows = hidden[b][real[b]].float()
                h = torch.zeros(D) if rows.shape[0] == 0 else (rows[-1] if codes[k, 2] else rows.mean(0))
                sims.append(float(condition_similarity(h, dirs[k])))
            sims.sort()
            mid = len(sims) // 2
            thr.append(sims[0] + (0.01 if k % 2 else -0.01) if len(sims) == 1 else (sims[mid - 1] + sims[mid]) / 2)
        cond = (dirs, torch.tensor(thr, dtype=torch.float32), codes)
    beh = (None, None)
    if n_beh:
        vecs = (torch.randn(n_beh, D, generator=gen) * 3).to(dtype)
        tab = None
        if tables:
            tab = (torch.rand(n_beh, 1 << max(n_cond, 1), generator=gen) < 0.5).to(torch.uint8)
            tab[:, -1] = 1
            tab[:, 0] = 0
            if seed % 2:
                tab = tab.to(dtype)  # LeashLayer passes tables in the hidden dtype; uint8 is accepted too
        beh = (vecs, tab)
    to = (lambda t: None if t is None else t.to(device))
    return (to(hidden), torch.zeros(B, dtype=torch.long, device=device), to(mask), *map(to, cond), *map(to, beh), ooi)


def _tol(dtype):
    # float32: the 1e-6. bfloat16: values are rounded to bf16 after float32
    # arithmetic that may differ in the last float32 bit, i.e. one bf16 ulp at most.
    return dict(rtol=0, atol=1e-6) if dtype == torch.float32 else dict(rtol=2 ** -7, atol=1e-6)


OPTIONS = list(itertools.product(["none", "left", "right", "holes"], [0, 1, 3], [0, 1, 2], [False, True], [False, True]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("B,T,D", [(1, 1, 8), (3, 7, 16), (5, 12, 64)])
def test_op_matches_reference_all_options(device, dtype, B, T, D):
    seen = {"met": 0, "unmet": 0, "changed": 0, "rescaled": 0}
    for i, (mk, nc, nb, tables, ooi) in enumerate(OPTIONS):
        if tables and not nb:
            continue
        args = _case(B, T, D, dtype, device, mk, nc, nb, tables, ooi, seed=1000 * B + 10 * T + i)
        ref_state = args[1].clone()
        got = OP(*args)
        ref = _reference.steer_layer(args[0], ref_state, *args[2:])
        assert torch.equal(args[1], ref_state), (mk, nc, nb, tables, ooi)
        assert got.dtype == dtype and got.shape == (B, T, D) and got.is_contiguous()
        torch.testing.assert_close(got, ref, **_tol(dtype))
        if nc:
            seen["met"] += int((ref_state != 0).sum())
            seen["unmet"] += int((ref_state == 0).sum())
        if nb:
            seen["changed"] += int(not torch.equal(got, args[0]))
        if ooi and nb:
            plain = OP(args[0], ref_state.clone(), *args[2:8], False)
            seen["rescaled"] += int(not torch.equal(plain, got))
    if B > 1:
        assert all(v > 0 for v in seen.values()), seen  # every branch was exercised


@pytest.mark.parametrize("device", DEVICES)
def test_conditions_follow_similarity_module_exactly(device):
    """Bits are condition_met(condition_similarity(pooled)) per row and condition."""
    gen = torch.Generator().manual_seed(7)
    B, T, D = 6, 9, 32
    hidden = torch.randn(B, T, D, generator=gen)
    mask = torch.ones(B, T, dtype=torch.long)
    for b in range(B):
        mask[b, : b] = 0  # left padding of b tokens
    dirs = torch.randn(4, D, generator=gen)
    codes = torch.tensor([[1, 0, 0], [2, 1, 0], [4, 0, 1], [8, 1, 1]])
    thr = torch.tensor([0.02, -0.01, 0.0, 0.01])
    state = torch.zeros(B, dtype=torch.long, device=device)
    out = OP(hidden.to(device), state, mask.to(device), dirs.to(device), thr.to(device), codes.to(device), None, None,
             False)
    assert torch.equal(out.cpu(), hidden)  # conditions alone never change the hidden state
    for b in range(B):
        rows = hidden[b, b:]
        expect = 0
        for k in range(4):
            h = rows[-1] if codes[k, 2] else rows.mean(0)
            sim = condition_similarity(h, dirs[k])
            if condition_met(sim, float(thr[k]), "smaller" if codes[k, 1] else "larger"):
                expect |= int(codes[k, 0])
        assert int(state[b]) == expect
    assert len(set(state.tolist())) > 1


@pytest.mark.parametrize("device", DEVICES)
def test_state_accumulates_and_gates_per_row(device):
    """state |= bits (never cleared by the op); each row indexes its own table entry."""
    D = 4
    hidden = torch.zeros(3, 2, D, device=device) + 1.0
    state = torch.tensor([0, 1, 3], device=device)
    vecs = torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0]], device=device)
    tables = torch.tensor([[0, 1, 0, 1], [0, 0, 1, 1]], dtype=torch.uint8, device=device)  # B1 iff C1, B2 iff C2
    out = OP(hidden, state, None, None, None, None, vecs, tables, False).cpu()
    assert torch.equal(out[0], torch.ones(2, D))
    assert torch.equal(out[1], torch.ones(2, D) + torch.tensor([1.0, 0, 0, 0]))
    assert torch.equal(out[2], torch.ones(2, D) + torch.tensor([1.0, 2.0, 0, 0]))
    assert state.tolist() == [0, 1, 3]


@pytest.mark.parametrize("device", DEVICES)
def test_ooi_rescales_rows_independently_and_ignores_padding(device):
    h = torch.tensor([[3.0, 4.0], [1.0, 0.0]], device=device)            # one row: norms 5 and 1
    hidden = torch.stack([h, h])                                           # [2, 2, 2]
    zero = torch.zeros(2, dtype=torch.long, device=device)
    grow = torch.tensor([[1.0, 0.0]], device=device)                       # both positions grow
    out = OP(hidden, zero.clone(), None, None, None, None, grow, None, True).cpu()
    torch.testing.assert_close(out.norm(dim=-1), torch.tensor([[5.0, 1.0], [5.0, 1.0]]))
    # only position 1 grows (|(1,-1)| > 1, |(3,3)| < 5): rescale iff position 1 is a real token of that row
    only_last = torch.tensor([[0.0, -1.0]], device=device)
    mask = torch.tensor([[1, 1], [1, 0]], device=device)                   # row 1: position 1 is padding
    out = OP(hidden, zero.clone(), mask, None, None, None, only_last, None, True).cpu()
    torch.testing.assert_close(out[0].norm(dim=-1), torch.tensor([5.0, 1.0]))
    assert torch.equal(out[1], (h + only_last).cpu())
    # a NaN anywhere real forces the rescale of that row only (which cannot repair a NaN)
    nan_rows = torch.stack([h, h + torch.tensor([float("nan"), 0.0], device=device)])
    out = OP(hidden, zero.clone(), None, None, None, None, torch.zeros(1, 2, device=device), None, True)
    assert torch.equal(out, hidden)  # nothing grew, nothing changed
    out = OP(nan_rows, zero.clone(), None, None, None, None, torch.zeros(1, 2, device=device), None, True).cpu()
    assert torch.equal(out[0], h.cpu()) and torch.isnan(out[1]).all()


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for i, (mk, nc, nb, tables, ooi) in enumerate([("left", 2, 2, True, True), ("none", 0, 1, False, False),
                                                    ("holes", 1, 0, False, False), ("right", 3, 1, True, False)]):
        args = _case(3, 6, 16, torch.float32, device, mk, nc, nb, tables, ooi, seed=i)
        torch.library.opcheck(OP.default, args)


def test_bad_arguments_raise():
    h = torch.zeros(2, 3, 4)
    st = torch.zeros(2, dtype=torch.long)
    with pytest.raises(RuntimeError, match="hidden must be"):
        OP(torch.zeros(2, 3), st, None, None, None, None, None, None, False)
    with pytest.raises(RuntimeError, match="state must be int64"):
        OP(h, torch.zeros(3, dtype=torch.long), None, None, None, None, None, None, False)
    with pytest.raises(RuntimeError, match="beh_vecs must be"):
        OP(h, st, None, None, None, None, torch.zeros(1, 5), None, False)
    with pytest.raises(RuntimeError, match="beh_vecs must be"):
        OP(h, st, None, None, None, None, torch.zeros(1, 4, dtype=torch.bfloat16), None, False)
    with pytest.raises(RuntimeError, match="cond_dirs needs"):
        OP(h, st, None, torch.zeros(1, 4), None, None, None, None, False)
    with pytest.raises(RuntimeError, match="token_mask must be"):
        OP(h, st, torch.ones(2, 4), None, None, None, None, None, False)


@pytest.mark.parametrize("device", DEVICES)
def test_compiles_fullgraph_and_matches_eager(device):
    args = _case(3, 6, 16, torch.float32, device, "left", 2, 2, True, True, seed=3)

    def f(hidden, state, *rest):
        out = _ops.steer_layer(hidden * 1.5, state, *rest)
        return out.sum(-1)

    eager_state = args[1].clone()
    expect = f(args[0], eager_state, *args[2:])
    for backend in ("eager", "aot_eager"):
        torch._dynamo.reset()
        state = args[1].clone()
        got = torch.compile(f, fullgraph=True, backend=backend)(args[0], state, *args[2:])
        torch.testing.assert_close(got, expect, rtol=0, atol=1e-6)
        assert torch.equal(state, eager_state)  # the in-place state update survives compilation


def test_gradients_flow_through_the_reference_twin():
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(2, 3, 8, generator=gen, requires_grad=True)
    vec = torch.randn(1, 8, generator=gen)
    out = _ops.steer_layer(h, torch.zeros(2, dtype=torch.long), None, None, None, None, vec, None, True)
    out.sum().backward()
    assert h.grad is not None and torch.isfinite(h.grad).all()
    with torch.no_grad():
        torch.testing.assert_close(out, OP(h, torch.zeros(2, dtype=torch.long), None, None, None, None, vec, None,
                                           True), rtol=0, atol=1e-6)
