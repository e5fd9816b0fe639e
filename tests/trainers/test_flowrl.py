"""FlowRL (design/METHODS.md 2): the flow-balance loss by hand and by property, the logZ head, and
the behaviour on a two-correct-answers bandit (FlowRL keeps the reference's 3:2, GRPO drifts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pytest
import torch
from _trainer_helpers import build_tiny, clone_policy, params_vector
from hypothesis import given, settings
from hypothesis import strategies as st

from creditgym import CreditBatch, Episode, Turn
from creditgym.agents import Collector
from creditgym.agents.base import Sampling
from creditgym.credit import compute
from creditgym.envs import Outcome, Parsed, Task, TextEnv
from creditgym.trainers import losses
from creditgym.trainers.flowrl import LogZHead, episode_mean, flowrl_loss, importance_weights, prompt_mask
from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer

BANDIT_ID = "FlowRLTestTwoModes-v0"
REF_PROBS = (0.3, 0.2, 0.5)  # p(A), p(B) (both correct), p(C) (wrong): METHODS.md 2's behavioural test


class TwoModesEnv(TextEnv):
    """One turn: answering A or B scores 1, anything else 0."""

    metadata = {**TextEnv.metadata, "obs_role": "user", "stop": ()}

    def __init__(self, max_turns: int = 1, split: str = "train", **kw: Any):
        super().__init__(max_turns=max_turns, split=split, **kw)

    def _new_task(self, rng: np.random.Generator, options: dict) -> Task:
        return Task("pick/0", self.split, gold=("A", "B"), private={})

    def _first_obs(self) -> str:
        return "Pick a letter."

    def _parse(self, action: str) -> Parsed:
        return Parsed("say", {"text": action}, action)

    def _apply(self, parsed: Parsed) -> Outcome:
        return Outcome("done", reward=float(parsed.args["text"].strip() in ("A", "B")), terminated=True)

    def _state_key(self) -> str:
        return f"turn{self.turn}"

    def _final_components(self) -> dict[str, float]:
        return {"success": float(self.episode_return > 0)}


@pytest.fixture(scope="module", autouse=True)
def _bandit_env() -> None:
    if BANDIT_ID not in gymnasium.registry:
        gymnasium.register(BANDIT_ID, entry_point=TwoModesEnv)


def _cfg(**kw: Any) -> GRPOConfig:
    base: dict[str, Any] = dict(objective="flowrl", steps=2, num_groups=4, group_size=8, max_new_tokens=1, lr=3e-3,
                                tensorboard=False, save_episodes=False)  # fmt: skip
    return GRPOConfig(**{**base, **kw})


# ---------------------------------------------------------------- the loss by hand (METHODS.md 2)
def _worked_batch() -> tuple[torch.Tensor, ...]:
    logp = torch.tensor([[-0.5, -0.7, 0.0, 0.0], [-1.0, -1.0, -1.0, -1.0]], dtype=torch.float64)
    ref = torch.tensor([[-0.6, -0.8, 0.0, 0.0], [-0.9, -0.9, -0.9, -0.9]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    return logp, ref, mask


def test_worked_example_by_hand() -> None:
    # one prompt, rewards (1, 0): grpo's group-normalised return is the episode reward rhat
    eps = [
        Episode(turns=(Turn(action_ids=(1, 2), reward=r),), group_id="g", task_id="t", seed=0)
        for r in (1.0, 0.0)
    ]
    adv = compute("grpo", CreditBatch.from_episodes(eps))
    rhat = episode_mean(adv.token_BT.double(), CreditBatch.from_episodes(eps).loss_mask_BT)
    torch.testing.assert_close(
        rhat, torch.tensor([0.707106, -0.707106], dtype=torch.float64), atol=1e-6, rtol=0
    )

    logp, ref, mask = _worked_batch()
    logz = torch.tensor([0.5, 0.5], dtype=torch.float64, requires_grad=True)
    rhat = torch.tensor([0.707106, -0.707106], dtype=torch.float64)
    loss, metrics = flowrl_loss(logz, logp, logp, ref, rhat, mask, beta=15.0)
    # delta = (0.5 - 0.6 - 10.60659 + 0.7, 0.5 - 1 + 10.60659 + 0.9) = (-10.006587, 11.006587)
    assert float(loss.detach()) == pytest.approx(110.638364, abs=1e-4)
    assert metrics["flowrl/delta_abs"] == pytest.approx((10.006587 + 11.006587) / 2, abs=1e-5)
    loss.backward()
    assert float(logz.grad.sum()) == pytest.approx(1.0, abs=1e-5)  # dL/dlogZ of the shared prompt
    # episode 1 with sum(logp - old) = 0.3: w = min(exp 0.3, 1.2) = 1.2
    old = logp.clone()
    old[1] -= 0.075
    loss_w, metrics_w = flowrl_loss(logz.detach(), logp, old, ref, rhat, mask, beta=15.0)
    assert float(loss_w) == pytest.approx(122.75286, abs=1e-4) and metrics_w["flowrl/is_clipfrac"] == 0.5


def test_importance_weight_modes_by_hand() -> None:
    logp = torch.tensor([[0.3, 0.0], [3.0, 0.0], [-0.5, 0.0]])
    mask = torch.tensor([[1, 0], [1, 1], [1, 1]], dtype=torch.bool)
    old = torch.zeros_like(logp)
    paper, clipped = importance_weights(logp, old, mask, 0.2, "paper")
    torch.testing.assert_close(paper, torch.tensor([1.2, 1.2, 0.8]))
    assert clipped.tolist() == [True, True, True]
    torch.testing.assert_close(
        importance_weights(logp, old, mask, 0.2, "max10")[0], torch.tensor([1.349859, 10.0, 0.606531])
    )
    torch.testing.assert_close(
        importance_weights(logp, old, mask, 0.2, "none")[0], torch.tensor([1.349859, 20.085537, 0.606531])
    )
    with pytest.raises(ValueError, match="flowrl_is_clip"):
        importance_weights(logp, old, mask, 0.2, "both")


def test_prompt_mask_is_the_tokens_before_the_first_action() -> None:
    token_turn = torch.tensor([[-1, -1, 0, 0, -1, 1], [-1, 0, -1, -1, -1, -1], [-1, -1, -1, -1, -1, -1]])
    attn = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]])
    assert prompt_mask(token_turn, attn).int().tolist() == [
        [1, 1, 0, 0, 0, 0],
        [1, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
    ]


# ---------------------------------------------------------------- properties of the loss
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), beta=st.floats(0.1, 20.0), split=st.integers(1, 4))
def test_flow_loss_properties(seed: int, beta: float, split: int) -> None:
    g = torch.Generator().manual_seed(seed)
    B, T = 5, 6
    logp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    old = logp + 0.1 * torch.randn(B, T, generator=g, dtype=torch.float64)
    ref = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    mask = torch.rand(B, T, generator=g) < 0.6
    mask[0] = False  # an episode without a trainable token adds nothing
    rhat = torch.randn(B, generator=g, dtype=torch.float64)
    logz = torch.randn(B, generator=g, dtype=torch.float64).requires_grad_(True)
    loss, _ = flowrl_loss(logz, logp, old, ref, rhat, mask, beta=beta)
    assert float(loss) >= 0.0
    # the gradient on logZ_b is 2 w_b delta_b / |B+| (0 for the empty episode)
    (grad,) = torch.autograd.grad(loss, logz)
    n = mask.sum(-1).clamp_min(1)
    delta = logz.detach() + (logp * mask).sum(-1) / n - beta * rhat - (ref * mask).sum(-1) / n
    w, _ = importance_weights(logp, old, mask)
    has = mask.any(-1)
    torch.testing.assert_close(grad, 2 * w * delta * has / has.sum())
    # micro-batches with the mini-batch's |B+| sum to the full loss (gradient accumulation)
    denom = losses.aggregation_denom(mask, "seq-mean-token-sum")
    parts = [flowrl_loss(logz[i], logp[i], old[i], ref[i], rhat[i], mask[i], beta=beta, denom=denom)[0]
             for i in torch.arange(B).tensor_split(split)]  # fmt: skip
    torch.testing.assert_close(sum(parts), loss)
    # a per-token constant added to both the policy and the reference cancels (length normalisation)
    shifted, _ = flowrl_loss(logz, logp + 0.7, old + 0.7, ref + 0.7, rhat, mask, beta=beta)
    torch.testing.assert_close(shifted, loss)


def test_fixed_points_on_the_exact_expected_gradient() -> None:
    """Tabular policy over (A, B, C), exact expectations under the policy: FlowRL's stationary point
    keeps the reference's 3:2 between the two correct answers while the wrong one vanishes; the
    group-normalised policy gradient makes the richer correct answer richer."""
    ref = torch.log(torch.tensor(REF_PROBS, dtype=torch.float64))
    r = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    mask = torch.ones(3, 1, dtype=torch.bool)

    def run(objective: str, steps: int, lr: float) -> torch.Tensor:
        theta, logz = (
            ref.clone().requires_grad_(True),
            torch.zeros((), dtype=torch.float64, requires_grad=True),
        )
        for _ in range(steps):
            logp = torch.log_softmax(theta, -1)
            p = logp.detach().exp()
            mean = (p * r).sum()
            rhat = (r - mean) / (
                (p * (r - mean) ** 2).sum().sqrt() + 1e-6
            )  # grpo's normalisation, population form
            if objective == "flowrl":  # sum_y p_y delta_y^2
                loss, _ = flowrl_loss(logz.expand(3), logp[:, None], logp.detach()[:, None], ref[:, None], rhat, mask,
                                      beta=15.0, weight_B=p, denom=1.0)  # fmt: skip
            else:  # -sum_y p_y rhat_y ratio_y
                loss, _ = losses.policy_loss(logp[:, None], logp.detach()[:, None], rhat[:, None], mask,
                                             is_weight_BT=p[:, None], agg="seq-mean-token-sum", denom=1.0)  # fmt: skip
            g_theta, g_logz = torch.autograd.grad(loss, [theta, logz], allow_unused=True)
            with torch.no_grad():
                theta -= lr * g_theta
                if g_logz is not None:
                    logz -= lr * g_logz
        return torch.softmax(theta.detach(), -1)

    flow, grpo = run("flowrl", 1000, 0.03), run("pg", 500, 0.1)
    assert float(flow[2]) < 1e-3 and float(grpo[2]) < 1e-2  # both stop answering C
    assert float(flow[0] / flow[1]) == pytest.approx(1.5, rel=0.03)
    assert float(grpo[0] / grpo[1]) > 5.0  # rich get richer


# ---------------------------------------------------------------- the head and the policy pass
def test_logz_head_pools_the_prompt_and_checkpoints_its_dropout_stream() -> None:
    head = LogZHead(8, layers=3, seed=4)
    assert [type(m).__name__ for m in head.mlp] == ["Linear", "GELU", "LayerNorm", "SeededDropout"] * 2 + [
        "Linear"
    ]
    assert all(
        torch.equal(a, b)
        for a, b in zip(head.state_dict().values(), LogZHead(8, 3, seed=4).state_dict().values())
    )
    h = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    prompt = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    head.eval()
    z = head(h, prompt)
    h2 = h.clone()
    h2[:, 4] += 5.0  # outside every prompt
    h2[0, 2:] -= 3.0
    torch.testing.assert_close(head(h2, prompt), z)
    head.train()  # dropout on: the masks come from the head's own generator, restored with it
    state = head.checkpoint()
    first = head(h, prompt)
    head.restore(state)
    torch.testing.assert_close(head(h, prompt), first)
    assert not torch.equal(head(h, prompt), first)


def test_forward_hidden_at_matches_the_logits_and_the_models_hidden_states(tiny_policy) -> None:
    ids = torch.tensor([[5, 9, 17, 33, 2, 0], [7, 7, 8, 9, 10, 11]])
    attn = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    pos = torch.tensor([[0, 0, 1, 1, 0, 0], [0, 1, 0, 0, 1, 1]], dtype=torch.bool)
    logits, hidden = tiny_policy.forward_hidden_at(ids, attn, pos)
    torch.testing.assert_close(logits, tiny_policy.forward_logits_at(ids, attn, pos))
    assert hidden.shape == (2, 6, tiny_policy.hidden_size)
    out = tiny_policy.model(input_ids=ids, attention_mask=attn, position_ids=(attn.cumsum(-1) - 1).clamp(min=0),
                            output_hidden_states=True)  # fmt: skip
    torch.testing.assert_close(hidden, out.hidden_states[-1])
    tiny_policy._head_split_ok = False  # the fallback path (a model with logit post-processing) agrees
    logits_fb, hidden_fb = tiny_policy.forward_hidden_at(ids, attn, pos)
    torch.testing.assert_close(logits_fb, logits)
    torch.testing.assert_close(hidden_fb, hidden)


# ---------------------------------------------------------------- the trainer
def test_cli_flags_select_flowrl() -> None:
    from creditgym.cli.train import config_from_flags

    cfg = config_from_flags(
        GRPOConfig, ["--objective", "flowrl", "--flowrl-beta", "10", "--flowrl-is-clip", "max10"]
    )
    assert (cfg.objective, cfg.flowrl_beta, cfg.flowrl_is_clip, cfg.logz_layers) == (
        "flowrl",
        10.0,
        "max10",
        3,
    )


def test_config_refusals(tiny_policy) -> None:
    with pytest.raises(ValueError, match="unknown objective"):
        GRPOTrainer(tiny_policy, BANDIT_ID, _cfg(objective="flow"))
    with pytest.raises(ValueError, match="kl_coef, entropy_coef"):
        GRPOTrainer(tiny_policy, BANDIT_ID, _cfg(kl_coef=0.01, entropy_coef=0.01))
    with pytest.raises(ValueError, match="flowrl_is_clip"):
        GRPOTrainer(tiny_policy, BANDIT_ID, _cfg(flowrl_is_clip="both"))
    tr = GRPOTrainer(tiny_policy, BANDIT_ID, _cfg(history="window", num_groups=1, group_size=2))
    with pytest.raises(ValueError, match="history='full'"):
        tr.step()


def _prompt(policy: Any) -> torch.Tensor:
    ep = Collector(policy, BANDIT_ID, group_size=1, sampling=Sampling(max_new_tokens=1)).collect(1, seed=0)[0]
    return torch.tensor([list(ep.turns[0].obs_ids)])


def _answer_ids(policy: Any) -> list[int]:
    ids = [policy.tokenizer.encode(a) for a in "ABC"]
    assert all(len(i) == 1 for i in ids)
    return [i[0] for i in ids]


def answer_probs(policy: Any) -> torch.Tensor:
    """p(A), p(B), p(C) of the one-token answer after the bandit's prompt."""
    x = _prompt(policy)
    with torch.no_grad():
        return torch.softmax(policy.forward_logits(x, torch.ones_like(x))[0, -1].float(), -1)[
            _answer_ids(policy)
        ]


def fit_answers(policy: Any, probs: tuple[float, float, float], steps: int = 150) -> None:
    """Distil the policy's first answer token to `probs` over A, B, C (cross-entropy, Adam)."""
    x = _prompt(policy)
    target = torch.zeros(int(policy.model.get_output_embeddings().weight.shape[0]))
    target[_answer_ids(policy)] = torch.tensor(probs)
    opt = torch.optim.Adam([p for p in policy.model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        logits = policy.forward_logits(x, torch.ones_like(x))[0, -1]
        loss = -(target * torch.log_softmax(logits, -1)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.fixture
def bandit_policy(tiny_cache: Path) -> Any:
    policy = build_tiny(tiny_cache)
    fit_answers(policy, REF_PROBS)
    torch.testing.assert_close(answer_probs(policy), torch.tensor(REF_PROBS), atol=2e-3, rtol=0)
    return policy


def test_flowrl_keeps_the_reference_ratio_while_the_wrong_answer_vanishes(bandit_policy) -> None:
    tr = GRPOTrainer(bandit_policy, BANDIT_ID, _cfg(steps=40))
    tr.train()
    p = answer_probs(bandit_policy)
    assert float(p[2]) < 0.05  # C: 0.5 -> nearly gone
    assert float(p[0] / p[1]) == pytest.approx(1.5, rel=0.2)
    assert tr.history[-1]["success"] > 0.9 and "flowrl/logz" in tr.history[-1]


@pytest.mark.parametrize("objective", ["flowrl", "pg"])
def test_flowrl_pulls_a_drifted_ratio_back_to_the_reference_grpo_does_not(
    bandit_policy, objective: str
) -> None:
    """Reference 3:2:5 (the frozen copy made at construction); the policy then drifts to 3:1 with C
    nearly gone. Every group is all-correct, so GRPO's advantages are 0 and it keeps the drifted
    ratio; FlowRL's all-equal groups still pull each answer towards the reference."""
    tr = GRPOTrainer(bandit_policy, BANDIT_ID, _cfg(objective=objective, steps=15))
    fit_answers(bandit_policy, (0.745, 0.25, 0.005))
    start = float(answer_probs(bandit_policy)[0] / answer_probs(bandit_policy)[1])
    assert start == pytest.approx(2.98, rel=0.05)
    tr.train()
    ratio = float(answer_probs(bandit_policy)[0] / answer_probs(bandit_policy)[1])
    if objective == "flowrl":
        assert ratio < start - 0.5
    else:  # no pull back (the rare wrong answer's groups even reward the richer A more)
        assert ratio > start - 0.15


def test_the_head_is_trained_checkpointed_and_never_synced(tiny_cache: Path, tmp_path: Path) -> None:
    def trainer(steps: int, out: Path, **kw: Any) -> GRPOTrainer:
        cfg = _cfg(
            steps=steps,
            num_groups=2,
            group_size=4,
            out_dir=str(out),
            checkpoint_every=1,
            resume=True,
            seed=2,
            **kw,
        )
        policy = build_tiny(tiny_cache)
        return GRPOTrainer(policy, BANDIT_ID, cfg, generator=clone_policy(policy))

    straight = trainer(2, tmp_path / "a")
    head0 = params_vector(straight.logz_heads["agent"]).clone()
    straight.train()
    assert not torch.equal(
        params_vector(straight.logz_heads["agent"]), head0
    )  # the optimizer trains the head
    # the generator holds the policy's weights and nothing of the head
    gen_state = straight.generator.model.state_dict()  # type: ignore[union-attr]
    assert gen_state.keys() == straight.policies["agent"].model.state_dict().keys()
    torch.testing.assert_close(params_vector(straight.generator.model), params_vector(straight.model))  # type: ignore[union-attr]

    first = trainer(1, tmp_path / "b")
    first.train()
    resumed = trainer(2, tmp_path / "b")
    assert resumed.step_idx == 1
    resumed.train()
    assert torch.equal(params_vector(resumed.model), params_vector(straight.model))
    assert torch.equal(
        params_vector(resumed.logz_heads["agent"]), params_vector(straight.logz_heads["agent"])
    )
    assert torch.equal(
        resumed.logz_heads["agent"].generator.get_state(), straight.logz_heads["agent"].generator.get_state()
    )


def test_flowrl_trains_the_head_and_the_adapters_under_lora(tiny_cache: Path) -> None:
    pytest.importorskip("peft")
    policy = build_tiny(tiny_cache)
    tr = GRPOTrainer(
        policy, BANDIT_ID, _cfg(steps=2, lora=True, lora_r=4, lr=1e-2, num_groups=2, group_size=4)
    )
    named = dict(policy.model.named_parameters())
    before = {k: v.detach().clone() for k, v in named.items()}
    head0 = params_vector(tr.logz_heads["agent"]).clone()
    tr.train()
    changed = {k for k, v in named.items() if not torch.equal(v.detach(), before[k])}
    assert changed and all("lora_" in k for k in changed)  # adapters move, the base stays the reference
    assert not torch.equal(params_vector(tr.logz_heads["agent"]), head0)
    assert tr.history[-1]["kl_ref"] > 0.0  # the reference (adapters off) differs from the trained policy


def test_flowrl_off_policy_epochs_and_tis(tiny_policy) -> None:
    """Two epochs of two mini-batches (w_b leaves 1 after the first optimizer step) with TIS against
    the HF sampler (whose logprobs equal the trainer's: weight 1)."""
    cfg = _cfg(steps=1, num_groups=2, group_size=4, ppo_epochs=2, mini_batches=2, tis_cap=2.0, lr=1e-2)
    out = GRPOTrainer(tiny_policy, BANDIT_ID, cfg).train()
    assert out["tis/mean"] == pytest.approx(1.0, abs=1e-4) and out["skipped_steps"] == 0
    assert all(
        np.isfinite(out[k]) for k in ("pg_loss", "flowrl/logz", "flowrl/delta_abs", "flowrl/is_weight")
    )
    assert 0.8 - 1e-6 <= out["flowrl/is_weight"] <= 1.2 + 1e-6  # the paper's clip
    assert abs(out["flowrl/is_weight"] - 1.0) > 1e-4  # later mini-batches are off-policy
