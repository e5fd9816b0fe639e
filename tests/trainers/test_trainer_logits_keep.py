"""`forward_logprobs(start=...)`: the LM head from the first loss position on gives the same
log-probabilities, entropies and gradients as the full pass where a loss reads them."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from creditgym.trainers.common import first_loss_position, forward_logprobs


def _batch(seed: int, B: int = 3, T: int = 12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 300, (B, T), generator=g)
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    attn = (torch.arange(T)[None, :] < lengths[:, None]).long()
    return ids, attn


class _NoKeep:
    """A policy whose forward_logits has no logits_to_keep argument (computed in full, then sliced)."""

    def __init__(self, inner):
        self.inner = inner

    def forward_logits(self, ids_BT, attention_mask_BT):
        return self.inner.forward_logits(ids_BT, attention_mask_BT)


def test_first_loss_position_hand_example() -> None:
    m = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 1, 0, 0]], dtype=torch.bool)
    assert first_loss_position(m) == 2
    assert first_loss_position(torch.zeros(2, 4, dtype=torch.bool)) == 0


@pytest.mark.parametrize("wrap", [False, True])
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # read-only
@given(seed=st.integers(0, 10_000), start=st.integers(0, 12))
def test_start_matches_the_full_pass_where_the_loss_reads(tiny_policy, wrap: bool, seed: int, start: int) -> None:
    policy = _NoKeep(tiny_policy) if wrap else tiny_policy
    ids, attn = _batch(seed)
    full, H_full = forward_logprobs(policy, ids, attn, 0.7, with_entropy=True)
    part, H_part = forward_logprobs(policy, ids, attn, 0.7, with_entropy=True, start=start)
    assert part.shape == full.shape and H_part.shape == H_full.shape
    s = max(start, 0)
    torch.testing.assert_close(part[:, s:], full[:, s:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(H_part[:, s:], H_full[:, s:], rtol=1e-5, atol=1e-5)
    if s > 0:
        assert float(part[:, :s].detach().abs().sum()) == 0.0


def test_start_gives_the_same_gradient(tiny_policy) -> None:
    ids, attn = _batch(7)
    mask = attn.bool().clone()
    mask[:, :5] = False
    grads = []
    for start in (0, first_loss_position(mask)):
        tiny_policy.model.zero_grad(set_to_none=True)
        logp, _ = forward_logprobs(tiny_policy, ids, attn, 1.0, start=start)
        (logp * mask).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in tiny_policy.model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
