"""The condition_similarity ATen op (the one condition kernel): against its
pure-torch twin, against what steer_layer decides with it, opcheck, the fake
kernel's checks, and torch.compile(fullgraph=True)."""
import pytest
import torch

from activation_steering.native import ops as _ops
from activation_steering.oracles import ops as _reference

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
OP = torch.ops.activation_steering.condition_similarity


def _args(B, T, D, K, dtype, mask_kind, seed, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(B, T, D, generator=gen) * 2).to(dtype)
    if mask_kind == "none":
        mask = None
    else:
        lengths = torch.randint(1, T + 1, (B,), generator=gen)
        pos = torch.arange(T).unsqueeze(0)
        mask = (pos < lengths.unsqueeze(1)).long() if mask_kind == "right" else (pos >= (T - lengths).unsqueeze(1)).long()
    dirs = torch.randn(K, D, generator=gen)
    codes = torch.tensor([[1 << k, k % 2, (k // 2) % 2] for k in range(K)], dtype=torch.long)
    to = (lambda t: None if t is None else t.to(device))
    return to(hidden), to(mask), to(dirs), to(codes)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["f32", "bf16", "f16"])
@pytest.mark.parametrize("mask_kind", ["none", "left", "right"])
@pytest.mark.parametrize("B,T,D,K", [(1, 1, 8, 1), (3, 7, 16, 4), (5, 12, 64, 2)])
def test_op_matches_twin(device, dtype, mask_kind, B, T, D, K):
    args = _args(B, T, D, K, dtype, mask_kind, seed=B * 100 + T, device=device)
    got, want = OP(*args), _reference.condition_similarity(*args)
    assert got.dtype == torch.float32 and got.shape == (B, K)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)


def test_steer_layer_decides_with_the_same_similarities():
    """The state steer_layer writes is exactly the comparison of condition_similarity's output."""
    hidden, mask, dirs, codes = _args(6, 9, 32, 3, torch.float32, "left", seed=7)
    sims = OP(hidden, mask, dirs, codes)
    thr = sims.median(0).values  # per condition: some rows above, some below
    state = torch.zeros(6, dtype=torch.long)
    torch.ops.activation_steering.steer_layer(hidden, state, mask, dirs, thr, codes, None, None, False)
    smaller = codes[:, 1].bool()
    met = torch.where(smaller, sims > thr, sims < thr)
    assert torch.equal(state, (met.long() * codes[:, 0]).sum(1))
    assert 0 < int(met.sum()) < met.numel()


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for i, mk in enumerate(["none", "left", "right"]):
        torch.library.opcheck(OP.default, _args(3, 6, 16, 2, torch.float32, mk, seed=i, device=device))


def test_bad_arguments_raise_in_the_kernel_and_in_the_fake_kernel():
    from torch._subclasses.fake_tensor import FakeTensorMode

    h, m, d, c = _args(2, 3, 8, 2, torch.float32, "right", seed=0)
    bad = [((h[0], m, d, c), "hidden must be"), ((h, m[:, :2], d, c), "token_mask must be"),
           ((h, m, d[:, :4], c), "cond_dirs must be"), ((h, m, d.double(), c), "cond_dirs must be"),
           ((h, m, d, c[:1]), "cond_codes must be"), ((h, m, d, c.int()), "cond_codes must be")]
    for args, match in bad:
        with pytest.raises(RuntimeError, match=match):
            OP(*args)
        with FakeTensorMode() as mode, pytest.raises(RuntimeError, match=match):
            OP(*[None if a is None else mode.from_tensor(a) for a in args])


def test_steer_layer_fake_kernel_checks_too():
    from torch._subclasses.fake_tensor import FakeTensorMode

    h = torch.zeros(2, 3, 4)
    st = torch.zeros(2, dtype=torch.long)
    with FakeTensorMode() as mode, pytest.raises(RuntimeError, match="beh_vecs must be"):
        torch.ops.activation_steering.steer_layer(mode.from_tensor(h), mode.from_tensor(st), None, None, None, None,
                                                  mode.from_tensor(torch.zeros(1, 4, dtype=torch.bfloat16)), None, False)
    st32 = st.to(torch.int32)
    with FakeTensorMode() as mode, pytest.raises(RuntimeError, match="state must be int64"):
        torch.ops.activation_steering.steer_layer(mode.from_tensor(h), mode.from_tensor(st32), None, None, None,
                                                  None, None, None, False)


@pytest.mark.parametrize("device", DEVICES)
def test_compiles_fullgraph_and_matches_eager(device):
    hidden, mask, dirs, codes = _args(3, 6, 16, 2, torch.float32, "left", seed=3, device=device)

    def f(hidden, mask, dirs, codes):
        return _ops.condition_similarity(hidden * 1.5, mask, dirs, codes) + 1

    expect = f(hidden, mask, dirs, codes)
    for backend in ("eager", "aot_eager"):
        torch._dynamo.reset()
        got = torch.compile(f, fullgraph=True, backend=backend)(hidden, mask, dirs, codes)
        torch.testing.assert_close(got, expect, rtol=0, atol=1e-6)
