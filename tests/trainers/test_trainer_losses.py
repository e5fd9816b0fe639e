"""losses.py: hand-computed examples of METHODS.md section 1, loop references, properties."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from creditgym.trainers import losses as L

OLD = -2.0
NEW = [-1.594535, -2.693147, -0.613706, -1.904690]
ADV = [1.0, -1.0, -1.0, 0.5]


def _table() -> tuple[torch.Tensor, ...]:
    # ep0 = t1, t2, t4; ep1 = t3 (METHODS.md 1.3 worked example)
    logp = torch.tensor([[NEW[0], NEW[1], NEW[3]], [NEW[2], 0.0, 0.0]], dtype=torch.float64)
    old = torch.full_like(logp, OLD)
    adv = torch.tensor([[ADV[0], ADV[1], ADV[3]], [ADV[2], 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    return logp, old, adv, mask


@pytest.mark.parametrize(
    "kw,expected",
    [
        ({}, {"token-mean": 0.7625, "seq-mean-token-mean": 1.841667, "seq-mean-token-sum": 1.525, "seq-mean-token-sum-norm": 0.38125}),
        ({"eps_high": 0.28}, {"token-mean": 0.7425, "seq-mean-token-mean": 1.828333, "seq-mean-token-sum": 1.485, "seq-mean-token-sum-norm": 0.37125}),
        ({"dual_clip_c": 3.0}, {"token-mean": 0.5125, "seq-mean-token-mean": 1.341667, "seq-mean-token-sum": 1.025, "seq-mean-token-sum-norm": 0.25625}),
    ],
)
def test_policy_loss_worked_table(kw: dict, expected: dict) -> None:
    logp, old, adv, mask = _table()
    for agg, want in expected.items():
        loss, _ = L.policy_loss(logp, old, adv, mask, agg=agg, norm_const=4.0, **kw)
        assert float(loss) == pytest.approx(want, abs=2e-6), (kw, agg)


def test_policy_loss_per_token_values_and_clipfracs() -> None:
    logp, old, adv, mask = _table()
    _, m = L.policy_loss(logp, old, adv, mask)
    assert m["clipfrac"] == pytest.approx(2 / 4)
    _, m = L.policy_loss(logp, old, adv, mask, dual_clip_c=3.0)
    assert m["clipfrac_dual"] == pytest.approx(1 / 4)
    assert m["ratio_max"] == pytest.approx(4.0, rel=1e-5)


def test_clip_higher_and_dual_clip_gradients() -> None:
    old = torch.tensor([[0.0]])
    logp = torch.tensor([[math.log(1.25)]], requires_grad=True)
    mask = torch.ones(1, 1, dtype=torch.bool)
    L.policy_loss(logp, old, torch.tensor([[1.0]]), mask)[0].backward()
    assert float(logp.grad) == 0.0
    logp.grad = None
    L.policy_loss(logp, old, torch.tensor([[1.0]]), mask, eps_high=0.28)[0].backward()
    assert float(logp.grad) != 0.0
    logp4 = torch.tensor([[math.log(4.0)]], requires_grad=True)
    L.policy_loss(logp4, old, torch.tensor([[-1.0]]), mask, dual_clip_c=3.0)[0].backward()
    assert float(logp4.grad) == 0.0
    logp4.grad = None
    L.policy_loss(logp4, old, torch.tensor([[-1.0]]), mask)[0].backward()
    assert float(logp4.grad) != 0.0


def test_policy_loss_rejects_bad_knobs() -> None:
    logp, old, adv, mask = _table()
    with pytest.raises(ValueError, match="dual_clip_c"):
        L.policy_loss(logp, old, adv, mask, dual_clip_c=1.0)
    with pytest.raises(ValueError, match="eps_low"):
        L.policy_loss(logp, old, adv, mask, eps_low=1.0)
    with pytest.raises(ValueError, match="loss_norm_const"):
        L.policy_loss(logp, old, adv, mask, agg="seq-mean-token-sum-norm")
    with pytest.raises(ValueError, match="aggregation"):
        L.aggregate(logp, mask, agg="mean")


def test_per_turn_clip_worked_example() -> None:
    beta, ratio = 0.3, 1.22
    losses = []
    for g in (2.0, -1.0, 0.0):
        s = 1 + beta * math.tanh(g / 2)
        scale_BK = torch.tensor([[s]])
        eps_BT = L.per_turn_eps_scale(scale_BK, torch.tensor([[0]]))
        loss, _ = L.policy_loss(
            torch.tensor([[math.log(ratio)]]), torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), eps_scale_BT=eps_BT
        )
        losses.append(float(loss))
    assert losses == pytest.approx([-1.22, -1.172273, -1.2], abs=1e-5)
    with pytest.raises(ValueError, match="clip_scale_BK"):
        L.per_turn_eps_scale(torch.zeros(1, 1), torch.tensor([[0]]))


def test_unit_scales_reproduce_fixed_range_bit_for_bit() -> None:
    logp, old, adv, mask = _table()
    s = L.per_turn_eps_scale(torch.ones(2, 1, dtype=torch.float64), torch.tensor([[0, 0, 0], [0, -1, -1]]))
    a, _ = L.policy_loss(logp, old, adv, mask, eps_scale_BT=s.to(torch.float64))
    b, _ = L.policy_loss(logp, old, adv, mask)
    assert torch.equal(a, b)


def test_kl_worked_example_and_reward_form() -> None:
    logp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0]])
    assert L.kl_terms(logp, ref, "k1").tolist()[0] == pytest.approx([0.5, -1.0])
    assert L.kl_terms(logp, ref, "k2").tolist()[0] == pytest.approx([0.125, 0.5])
    k3 = L.kl_terms(logp, ref, "k3")
    assert k3.tolist()[0] == pytest.approx([0.106531, 0.718282], abs=1e-6)
    mask = torch.ones(1, 2, dtype=torch.bool)
    assert 0.04 * float(L.aggregate(k3, mask)) == pytest.approx(0.016496, abs=1e-6)
    r = L.kl_reward_penalty(torch.zeros(1, 1), L.kl_terms(logp, ref, "k1"), torch.tensor([[0, 0]]), mask, 0.04)
    assert float(r[0, 0]) == pytest.approx(0.02, abs=1e-7)
    x = torch.tensor([[-0.7]], requires_grad=True)
    assert float(L.kl_terms(x, x.detach(), "k1").detach()) == 0.0  # k1's pathwise gradient is 1, not 0
    for est in ("k2", "k3"):
        v = L.kl_terms(x, x.detach(), est).sum()
        (g,) = torch.autograd.grad(v, x)
        assert float(v.detach()) == 0.0 and float(g) == 0.0
    with pytest.raises(ValueError, match="kl_estimator"):
        L.kl_terms(logp, ref, "k4")


def test_entropy_worked_example() -> None:
    H = L.entropy_from_logits(torch.tensor([[[0.0, 0.0], [2.0, 0.0]]]))
    assert H.tolist()[0] == pytest.approx([0.693147, 0.365334], abs=1e-6)
    assert 0.01 * float(L.aggregate(H, torch.ones(1, 2))) == pytest.approx(0.005292, abs=1e-6)


def test_value_loss_worked_example_and_zero_grad_when_clipped() -> None:
    v = torch.tensor([0.9, 0.2], requires_grad=True)
    loss, m = L.value_loss(v, torch.tensor([0.5, 0.5]), torch.tensor([1.0, -0.1]), torch.ones(2))
    per_item = [0.045, 0.08]
    assert float(loss.detach()) == pytest.approx(sum(per_item) / 2, abs=1e-7)
    v1 = torch.tensor([[0.9]], requires_grad=True)
    L.value_loss(v1, torch.tensor([[0.5]]), torch.tensor([[1.0]]), torch.ones(1, 1))[0].backward()
    assert float(v1.grad) == 0.0  # clipped branch larger and V outside V_old +- 0.2
    assert m["vf_clipfrac"] == 1.0


def test_tis_worked_example() -> None:
    old = torch.full((1, 3), -1.0)
    gen = torch.tensor([[-1.5, -2.0, -0.8]])
    w, m = L.tis_weights(old, gen, torch.ones(1, 3), cap=2.0)
    assert w.tolist()[0] == pytest.approx([1.648721, 2.0, 0.818731], abs=1e-6)
    assert m["tis/capped_frac"] == pytest.approx(1 / 3)
    w_same, _ = L.tis_weights(old, old, torch.ones(1, 3))
    assert torch.equal(w_same, torch.ones(1, 3))


def test_overlong_worked_example() -> None:
    r = L.overlong_penalty(torch.tensor([15, 16, 18, 20, 21]), 20, 4)
    assert r.tolist() == pytest.approx([0.0, 0.0, -0.5, -1.0, -1.0])
    assert float(L.overlong_penalty(torch.tensor([18432]), 20480, 4096)) == pytest.approx(-0.5)


def test_dynamic_sampling_worked_example() -> None:
    r = torch.tensor([1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0], dtype=torch.float32)
    g = torch.arange(3).repeat_interleave(4)
    assert L.keep_informative_groups(r, g).tolist() == [False] * 4 + [True] * 4 + [False] * 4


def test_sft_worked_example() -> None:
    loss = L.sft_loss(torch.tensor([[-0.1, -2.0, -0.5]]), torch.tensor([[1, 0, 1]]))
    assert float(loss) == pytest.approx(0.3)


# ---------------------------------------------------------------- loop references and properties


def _loop_policy_loss(logp, old, adv, mask, eps_low, eps_high, c, agg, C):
    B, T = len(logp), len(logp[0])
    per_seq, tok_sum, tok_n = [], 0.0, 0
    for b in range(B):
        s, n = 0.0, 0
        for t in range(T):
            if not mask[b][t]:
                continue
            r = math.exp(max(-20, min(20, logp[b][t] - old[b][t])))
            a = adv[b][t]
            l = max(-a * r, -a * min(max(r, 1 - eps_low), 1 + eps_high))
            if c is not None and a < 0:
                l = min(l, -c * a)
            s += l
            n += 1
        tok_sum += s
        tok_n += n
        if n:
            per_seq.append((s, n))
    if agg == "token-mean":
        return tok_sum / tok_n if tok_n else 0.0
    if not per_seq:
        return 0.0
    if agg == "seq-mean-token-mean":
        return sum(s / n for s, n in per_seq) / len(per_seq)
    tot = sum(s for s, _ in per_seq) / len(per_seq)
    return tot / C if agg == "seq-mean-token-sum-norm" else tot


_floats = st.floats(-3, 3, allow_nan=False, width=32)


@given(
    st.integers(1, 4),
    st.integers(1, 6),
    st.lists(_floats, min_size=72, max_size=72),
    st.lists(st.booleans(), min_size=24, max_size=24),
    st.sampled_from(L.AGG_MODES),
    st.sampled_from([None, 3.0]),
)
def test_policy_loss_matches_loop_reference(B, T, xs, ms, agg, c) -> None:
    logp = torch.tensor(xs[: B * T], dtype=torch.float64).view(B, T)
    old = torch.tensor(xs[24 : 24 + B * T], dtype=torch.float64).view(B, T)
    adv = torch.tensor(xs[48 : 48 + B * T], dtype=torch.float64).view(B, T)
    mask = torch.tensor(ms[: B * T]).view(B, T)
    got, _ = L.policy_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.28, dual_clip_c=c, agg=agg, norm_const=7.0)
    want = _loop_policy_loss(logp.tolist(), old.tolist(), adv.tolist(), mask.tolist(), 0.2, 0.28, c, agg, 7.0)
    assert float(got) == pytest.approx(want, rel=1e-9, abs=1e-9)


@given(st.sampled_from(L.AGG_MODES), st.integers(1, 5), st.integers(0, 2**16))
def test_micro_batches_sum_to_full_batch_loss_and_gradient(agg, split, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    B, T = 6, 5
    logp = torch.randn(B, T, generator=g, dtype=torch.float64, requires_grad=True)
    old, adv = torch.randn(B, T, generator=g, dtype=torch.float64), torch.randn(B, T, generator=g, dtype=torch.float64)
    mask = torch.rand(B, T, generator=g) < 0.6
    full, _ = L.policy_loss(logp, old, adv, mask, agg=agg, norm_const=10.0)
    (g_full,) = torch.autograd.grad(full, logp)
    denom = L.aggregation_denom(mask, agg)
    total = torch.zeros((), dtype=torch.float64)
    bounds = sorted({0, B, *torch.randint(1, B, (split,), generator=g).tolist()})
    for lo, hi in itertools.pairwise(bounds):
        part, _ = L.policy_loss(logp[lo:hi], old[lo:hi], adv[lo:hi], mask[lo:hi], agg=agg, norm_const=10.0, denom=denom)
        total = total + part
    (g_micro,) = torch.autograd.grad(total, logp)
    assert float(total) == pytest.approx(float(full), abs=1e-9)
    assert torch.allclose(g_micro, g_full, atol=1e-9)


def test_doubling_episode_length_changes_token_mean_weight_not_dr_grpo() -> None:
    short = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    long = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    for agg, changes in (("token-mean", True), ("seq-mean-token-sum-norm", False)):
        ws = []
        for m in (short, long):
            x = torch.zeros(2, 4, requires_grad=True)
            L.aggregate(x, m, agg, norm_const=8.0).backward()
            ws.append(float(x.grad[1, 0]))
        assert (ws[0] != ws[1]) == changes


@given(st.lists(_floats, min_size=4, max_size=4), st.lists(_floats, min_size=4, max_size=4))
def test_kl_k2_k3_nonnegative(a, b) -> None:
    logp, ref = torch.tensor([a]), torch.tensor([b])
    assert bool((L.kl_terms(logp, ref, "k2") >= 0).all())
    assert bool((L.kl_terms(logp, ref, "k3") >= 0).all())


@given(st.lists(_floats, min_size=6, max_size=6), st.floats(0.05, 0.5), st.floats(0.05, 0.5))
def test_value_loss_matches_loop(xs, clip, _unused) -> None:
    v, vo, r = torch.tensor(xs[:2]), torch.tensor(xs[2:4]), torch.tensor(xs[4:])
    got, _ = L.value_loss(v, vo, r, torch.ones(2), vf_clip=clip)
    want = 0.0
    for i in range(2):
        vc = vo[i] + max(-clip, min(clip, float(v[i] - vo[i])))
        want += 0.5 * max(float(v[i] - r[i]) ** 2, float(vc - r[i]) ** 2)
    assert float(got) == pytest.approx(want / 2, rel=1e-5, abs=1e-6)
