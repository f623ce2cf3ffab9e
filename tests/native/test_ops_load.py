"""The ATen op library loads, matches its pure-torch reference, and traces under torch.compile."""
import pytest
import torch

from activation_steering.native import ops as _ops
from activation_steering.oracles import ops as _reference


def test_compiled_ops_loaded():
    assert _ops.HAVE_COMPILED_OPS, "the _torch_ops library did not load; run `make build`"


def _spans(B, T, gen):
    start = torch.randint(0, T, (B,), generator=gen)
    length = torch.randint(1, T + 1, (B,), generator=gen)
    end = torch.minimum(start + length, torch.full((B,), T))
    return start, end


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("B,T,D", [(1, 1, 1), (3, 7, 5), (8, 33, 64)])
def test_pool_spans_matches_reference(B, T, D, dtype):
    gen = torch.Generator().manual_seed(B * 100 + T)
    h = torch.randn(B, T, D, generator=gen).to(dtype)
    start, end = _spans(B, T, gen)
    got = _ops.pool_spans(h, start, end)
    ref = _reference.pool_spans(h, start, end)
    assert got.dtype == torch.float32 and got.shape == (B, D)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_pool_spans_opcheck():
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(4, 9, 6, generator=gen)
    start, end = _spans(4, 9, gen)
    torch.library.opcheck(torch.ops.activation_steering.pool_spans.default, (h, start, end))


def test_pool_spans_bad_shapes_raise():
    with pytest.raises(RuntimeError, match="hidden must be"):
        torch.ops.activation_steering.pool_spans(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long),
                                                 torch.ones(2, dtype=torch.long))


def test_pool_spans_compiles_without_graph_break():
    def f(h, s, e):
        return _ops.pool_spans(h * 2, s, e) + 1

    compiled = torch.compile(f, fullgraph=True, backend="eager")
    h = torch.randn(2, 5, 3)
    s, e = torch.tensor([0, 2]), torch.tensor([5, 4])
    torch.testing.assert_close(compiled(h, s, e), f(h, s, e))
