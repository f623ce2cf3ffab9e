"""activations/norms.py (the per-layer residual-norm statistic) against its plain twin
oracles/norms.py, and the sink rule on hand-made cases."""
import numpy as np
import pytest
import torch

from activation_steering.activations.norms import (ResidualNormStats, apply_sink_rule, positions_from_mask,
                                                   residual_norms, token_norms)
from activation_steering.oracles.norms import residual_norm_medians_reference
from tiny_models import make_model

TEXTS = ["The quick brown fox jumps over the lazy dog.", "How do I bake bread?", "Paris",
         "Tell me a story about a cat who learns to sail.", "I'm sorry, but I can't help with that request."]


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "opt", "qwen2"])
@pytest.mark.parametrize("drop_first,outlier_factor", [(True, 10.0), (True, None), (False, 3.0)])
def test_batched_statistic_equals_one_string_reference(family, tokenizer, drop_first, outlier_factor):
    model = make_model(family, n_layers=4, hidden=64)
    layers = [0, 1, 3, -1]
    fast = residual_norms(model, tokenizer, TEXTS, layers, add_special_tokens=True, batch_size=2,
                          drop_first=drop_first, outlier_factor=outlier_factor)
    ref = residual_norm_medians_reference(model, tokenizer, TEXTS, layers, drop_first=drop_first,
                                          outlier_factor=outlier_factor)
    assert sorted(fast) == sorted(ref) == [0, 1, 3]
    for i in ref:
        assert fast[i].median == pytest.approx(ref[i], rel=1e-5)
        n_tokens = sum(len(tokenizer(t)["input_ids"]) for t in TEXTS)
        assert fast[i].n_kept + fast[i].n_dropped == n_tokens
        if drop_first:
            assert fast[i].n_dropped >= len(TEXTS)


def test_left_right_and_piecewise_padding_agree():
    torch.manual_seed(0)
    lengths = [5, 3, 7]
    rows = [torch.randn(n, 8) * (1 + torch.arange(n).float()[:, None]) for n in lengths]
    rows[1][0] *= 500.0  # a sink at position 0
    rows[2][4] *= 500.0  # a sink elsewhere: the outlier rule's job
    width = max(lengths)

    def padded(left):
        h = torch.zeros(len(rows), width, 8)
        m = torch.zeros(len(rows), width, dtype=torch.long)
        for r, x in enumerate(rows):
            sl = slice(width - len(x), width) if left else slice(0, len(x))
            h[r, sl], m[r, sl] = x, 1
        return h, m

    results = []
    for left in (True, False):
        s = ResidualNormStats()
        s.add(2, *padded(left))
        results.append(s.medians()[2])
    # the same strings in two pieces (a 2-token prefix, then the rest) with their true positions
    s = ResidualNormStats()
    for lo, hi in ((0, 2), (2, None)):
        for x in rows:
            piece = x[lo:hi]
            s.add(2, piece[None], positions=torch.arange(lo, lo + piece.shape[0])[None])
    results.append(s.medians()[2])
    # a shared 2-token prefix run once for two strings (row_counts=2), then their own tokens
    twin = [rows[2][:2].clone()] * 2
    tails = [torch.randn(3, 8), torch.randn(6, 8)]
    shared = ResidualNormStats()
    shared.add(5, twin[0][None], positions=torch.arange(2)[None], row_counts=[2])
    for tail in tails:
        shared.add(5, tail[None], positions=torch.arange(2, 2 + tail.shape[0])[None])
    whole = ResidualNormStats()
    for tail in tails:
        whole.add(5, torch.cat([twin[0], tail])[None])
    assert shared.summaries()[5] == whole.summaries()[5]
    flat = torch.cat(rows)
    pos = np.concatenate([np.arange(n) for n in lengths])
    expected = np.median(apply_sink_rule(flat.norm(dim=-1).double().numpy(), pos))
    assert results == pytest.approx([expected] * 3, rel=1e-6)
    kept = ResidualNormStats()
    kept.add(2, *padded(True))
    summary = kept.summaries()[2]
    assert summary.n_kept + summary.n_dropped == sum(lengths)
    assert summary.n_dropped == 3 + 1  # three first tokens + the planted outlier


def test_sink_rule_by_hand():
    norms = np.array([100.0, 1, 2, 3, 4, 50, 1000.0])
    pos = np.array([0, 1, 2, 3, 4, 5, -1])  # -1: a pad
    assert apply_sink_rule(norms, pos, True, None).tolist() == [1, 2, 3, 4, 50]
    assert apply_sink_rule(norms, pos, True, 10.0).tolist() == [1, 2, 3, 4]  # 50 > 10 * median 3
    assert apply_sink_rule(norms, pos, False, 10.0).tolist() == [1, 2, 3, 4]  # 100 and 50 > 10 * 3.5
    assert apply_sink_rule(norms, pos, False, None).tolist() == [100, 1, 2, 3, 4, 50]
    with pytest.raises(ValueError, match="outlier_factor"):
        apply_sink_rule(norms, pos, True, 0.5)


def test_positions_from_mask_any_padding():
    m = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0], [1, 0, 1, 1]])
    assert positions_from_mask(m).tolist() == [[-1, -1, 0, 1], [0, 1, 2, -1], [0, -1, 1, 2]]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_token_norms_do_not_overflow_in_half_precision(dtype):
    # Gemma-sized activations: entries in the thousands; their fp16 squares overflow
    h = torch.full((1, 3, 640), 1000.0, dtype=dtype)
    n = token_norms(h)
    assert n.dtype == torch.float32 and torch.isfinite(n).all()
    assert n[0, 0].item() == pytest.approx(1000.0 * 640 ** 0.5, rel=1e-2)


def test_bad_arguments():
    s = ResidualNormStats()
    with pytest.raises(ValueError, match=r"\[batch, tokens, hidden\]"):
        s.add(0, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="does not match"):
        s.add(0, torch.zeros(1, 3, 4), attention_mask=torch.ones(1, 2))
    with pytest.raises(ValueError, match="row_counts"):
        s.add(0, torch.zeros(2, 3, 4), row_counts=[1])
    with pytest.raises(ValueError, match="outlier_factor"):
        ResidualNormStats(outlier_factor=1.0)
    one_token = ResidualNormStats()
    one_token.add(0, torch.ones(2, 1, 4))
    with pytest.raises(ValueError, match="at least two tokens"):
        one_token.medians()
