"""`forward_logprobs` (trainers/logprobs.py): `start=` and `mask_BT=` give the same log-probabilities,
entropies and gradients as the full pass where a loss reads them; trainers refuse a non-trainable policy."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from creditgym.trainers.logprobs import first_loss_position, forward_logprobs


def _batch(seed: int, B: int = 3, T: int = 12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 300, (B, T), generator=g)
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    attn = (torch.arange(T)[None, :] < lengths[:, None]).long()
    return ids, attn


class _NoKeep:
    """A policy whose forward_logits computes every position's logits, then slices the last
    `logits_to_keep` (the LM head runs in full)."""

    def __init__(self, inner):
        self.inner = inner

    def forward_logits(self, ids_BT, attention_mask_BT, logits_to_keep=0):
        logits = self.inner.forward_logits(ids_BT, attention_mask_BT)
        return logits[:, -logits_to_keep:] if logits_to_keep else logits


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


# ---------------------------------------------------------------- mask_BT: the LM head on the mask only
def _mask(seed: int, attn: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    return (torch.rand(attn.shape, generator=g) < 0.4) & attn.bool()


class _Uniform:
    """Hand example: every position's logits are 0 over a 4-token vocabulary."""

    def forward_logits(self, ids_BT, attention_mask_BT, logits_to_keep=0):
        return torch.zeros(*ids_BT.shape, 4)

    def forward_logits_at(self, ids_BT, attention_mask_BT, positions_BT):
        return torch.zeros(int(positions_BT.sum()), 4)


def test_mask_hand_example() -> None:
    ids = torch.tensor([[1, 2, 3, 0], [2, 2, 1, 3]])
    attn = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    mask = torch.tensor([[1, 0, 1, 1], [0, 1, 1, 0]], dtype=torch.bool)
    logp, H = forward_logprobs(_Uniform(), ids, attn, 1.0, with_entropy=True, mask_BT=mask)
    ln4 = torch.log(torch.tensor(4.0))
    # t = 0 has no prefix and [0, 3] is padding: both stay 0 although the mask holds them
    expected = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
    torch.testing.assert_close(logp, -ln4 * expected)
    torch.testing.assert_close(H, ln4 * expected)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # read-only
@given(seed=st.integers(0, 10_000), temperature=st.sampled_from([1.0, 0.7, 0.0]))
def test_mask_matches_the_full_pass_on_the_mask(tiny_policy, seed: int, temperature: float) -> None:
    ids, attn = _batch(seed)
    mask = _mask(seed, attn)
    full, H_full = forward_logprobs(_NoKeep(tiny_policy), ids, attn, temperature, with_entropy=True)
    part, H_part = forward_logprobs(tiny_policy, ids, attn, temperature, with_entropy=True, mask_BT=mask)
    torch.testing.assert_close(part * mask, full * mask, rtol=1e-5, atol=1e-5)
    on = mask.clone()
    on[:, 0] = False
    torch.testing.assert_close(H_part * on, H_full * on, rtol=1e-5, atol=1e-5)
    assert float(part.detach()[~mask].abs().sum()) == 0.0 and float(H_part.detach()[~mask].abs().sum()) == 0.0


@pytest.mark.parametrize("lora", [False, True])
def test_mask_gives_the_same_gradient(tiny_policy, lora: bool) -> None:
    if lora:
        pytest.importorskip("peft")
        tiny_policy.add_lora(r=4, alpha=8, target_modules=["q_proj", "v_proj"])
        with torch.no_grad():  # adapters start at B = 0; move them so their gradients are not trivial
            for name, p in tiny_policy.model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(3))
    ids, attn = _batch(11, B=4, T=16)
    mask = _mask(11, attn)
    grads = []
    for kw in ({}, {"mask_BT": mask}):
        tiny_policy.model.zero_grad(set_to_none=True)
        logp, H = forward_logprobs(tiny_policy, ids, attn, 1.0, with_entropy=True, **kw)
        ((logp + 0.1 * H) * mask).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in tiny_policy.model.parameters() if p.grad is not None]))
    assert tiny_policy._head_split_ok is True
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_mask_falls_back_when_the_split_pass_disagrees(tiny_policy, monkeypatch, caplog) -> None:
    ids, attn = _batch(5)
    mask = _mask(5, attn)
    full, _ = forward_logprobs(tiny_policy, ids, attn)
    real = type(tiny_policy)._head_at
    monkeypatch.setattr(type(tiny_policy), "_head_at", lambda self, *a: 30 * torch.tanh(real(self, *a) / 30) + 1.0)
    with caplog.at_level("WARNING"):
        part, _ = forward_logprobs(tiny_policy, ids, attn, mask_BT=mask)
    assert tiny_policy._head_split_ok is False and "computing full logits instead" in caplog.text
    torch.testing.assert_close(part * mask, full * mask, rtol=1e-5, atol=1e-5)


def test_no_grad_logprobs_on_the_mask_match_the_full_pass(tiny_policy) -> None:
    from creditgym.agents.base import TrainablePolicy
    from creditgym.trainers.grpo import GRPOTrainer

    tiny_policy.max_batch_size = 2  # several chunks
    ids, attn = _batch(13, B=5, T=14)
    mask = _mask(13, attn)
    full = tiny_policy.logprobs(ids, attn, 0.7)
    part = tiny_policy.logprobs(ids, attn, 0.7, mask_BT=mask)
    torch.testing.assert_close(part * mask, full * mask, rtol=1e-5, atol=1e-5)
    assert float(part[~mask].abs().sum()) == 0.0 and not part.requires_grad
    with_grad = tiny_policy.logprobs(ids, attn, 0.7, grad=True, mask_BT=mask)
    assert with_grad.requires_grad
    torch.testing.assert_close(with_grad.detach() * mask, full * mask, rtol=1e-5, atol=1e-5)
    assert float(with_grad.detach()[~mask].abs().sum()) == 0.0
    # a policy without the TrainablePolicy methods (logprobs without a mask, no forward passes) is
    # refused by the trainers, which call the protocol and never probe a policy's signatures
    assert isinstance(tiny_policy, TrainablePolicy) and not isinstance(_FullOnly(tiny_policy), TrainablePolicy)
    with pytest.raises(TypeError, match="TrainablePolicy"):
        GRPOTrainer(_FullOnly(tiny_policy), "creditgym/SearchEasy-v0")


class _FullOnly:
    def __init__(self, inner):
        self.inner = inner

    def logprobs(self, ids_BT, attention_mask_BT, temperature=1.0, grad=False):
        return self.inner.logprobs(ids_BT, attention_mask_BT, temperature, grad)
