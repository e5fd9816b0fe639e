"""PPO's critic on the row-token layout (issue 16 item 3, follow-up): in `window` mode it values and
is trained on each turn's own prompt; in `full` mode (one row per episode) nothing changes."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from _trainer_helpers import build_tiny, expert_episodes, params_vector
from hypothesis import given, settings
from hypothesis import strategies as st

from creditgym import CreditBatch, Episode, Turn
from creditgym.trainers import losses
from creditgym.trainers.logprobs import micro_batches, row_lengths
from creditgym.trainers.ppo import (
    PPOConfig,
    PPOTrainer,
    _end_row_starts,
    _row_turn_mask,
    turn_values_from_tokens,
)

DEVICE = "creditgym/Device-v0"


# ---------------------------------------------------------------------- the episode-layout reference
# The critic as it ran before the row layout: on `ids_BT`, one sequence per episode. For full-history
# episodes that is exactly what the policy saw, so the row path must reproduce it bit for bit.


def _ref_critic(vm: Any, ids_BT: torch.Tensor, attn_BT: torch.Tensor, budget: int) -> torch.Tensor:
    lengths = row_lengths(attn_BT)
    out = torch.zeros(ids_BT.shape, dtype=torch.float32)
    with torch.no_grad():
        vm.eval()
        for rows in micro_batches(lengths, budget):
            T = max(lengths[i] for i in rows)
            out[rows, :T] = vm(ids_BT[rows, :T], attn_BT[rows, :T])
    return out


def _ref_values(tr: PPOTrainer, batch: CreditBatch) -> tuple[torch.Tensor, torch.Tensor]:
    vm, budget = tr.critics["agent"].model, tr.config.token_budget
    v_BT = _ref_critic(vm, batch.ids_BT, batch.attention_mask_BT, budget)
    lengths = torch.tensor(row_lengths(batch.attention_mask_BT))
    B = batch.B
    ids = torch.cat([batch.ids_BT, torch.zeros(B, 1, dtype=batch.ids_BT.dtype)], 1)
    attn = torch.cat([batch.attention_mask_BT, torch.zeros(B, 1, dtype=batch.attention_mask_BT.dtype)], 1)
    attn[torch.arange(B), lengths] = 1
    end_B = _ref_critic(vm, ids, attn, budget)[torch.arange(B), lengths]
    return v_BT, turn_values_from_tokens(v_BT, batch.token_turn_BT, batch.turn_mask_BK, batch.truncated_B, end_B)


def _ref_critic_update(tr: PPOTrainer, batch: CreditBatch, adv: Any, old: tuple[torch.Tensor, torch.Tensor]) -> None:
    cfg, vm = tr.config, tr.critics["agent"].model
    opt, sched = tr.critics["agent"].optimizer, tr.critics["agent"].scheduler
    turn_level = cfg.estimator_cfg["level"] == "turn"
    returns, mask = (adv.returns_BK, batch.turn_mask_BK) if turn_level else (adv.returns_BT, batch.loss_mask_BT)
    lengths, denom = row_lengths(batch.attention_mask_BT), float(mask.sum())
    vm.train()
    for _ in range(cfg.ppo_epochs):
        for rows in micro_batches(lengths, cfg.token_budget):
            T = max(lengths[i] for i in rows)
            v_BT = vm(batch.ids_BT[rows, :T], batch.attention_mask_BT[rows, :T])
            if turn_level:
                v = turn_values_from_tokens(v_BT, batch.token_turn_BT[rows, :T], batch.turn_mask_BK[rows],
                                            torch.zeros(len(rows), dtype=torch.bool), torch.zeros(len(rows)))  # fmt: skip
                args = (v, old[1][rows], returns[rows], mask[rows])
            else:
                args = (v_BT, old[0][rows, :T], returns[rows, :T], mask[rows, :T])
            vl, _ = losses.value_loss(*args, vf_clip=cfg.vf_clip, agg="token-mean", denom=denom)
            (cfg.vf_coef * vl).backward()
        torch.nn.utils.clip_grad_norm_(vm.parameters(), cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)


def _full_episodes(tokenizer: Any) -> list[Any]:
    """Two-turn full-history episodes; every third one truncated with a final observation to bootstrap."""
    more = tuple(tokenizer.encode("<information>Ask again.</information>"))
    eps = expert_episodes(tokenizer, n=9, group_size=3)
    return [
        dataclasses.replace(e, terminated=False, truncated=True, final_obs_ids=more) if i % 3 == 0 else e
        for i, e in enumerate(eps)
    ]


@pytest.mark.parametrize("level", ["token", "turn"])
def test_full_history_critic_is_unchanged_by_the_row_layout(tiny_cache, level: str) -> None:
    """One row per episode: critic values, bootstrap values, advantages and the critic's weights after
    two epochs of value regression equal the episode-layout (`ids_BT`) computation exactly."""
    from creditgym.credit import compute

    def trainer() -> PPOTrainer:
        cfg = PPOConfig(steps=1, lr=1e-2, tensorboard=False, ppo_epochs=2, token_budget=80, vf_clip=0.05,
                        estimator_cfg={"level": level, "gamma": 0.9, "lam": 0.95})  # fmt: skip
        return PPOTrainer(build_tiny(tiny_cache), "GuessNumber-v0", cfg)

    new, ref = trainer(), trainer()
    eps = _full_episodes(new.policies["agent"].tokenizer)
    batch, adv, _, _ = new._credit("agent", eps)
    assert batch.R == batch.B and bool(batch.truncated_B.any())
    assert len(micro_batches(row_lengths(batch.attention_mask_RT), 80)) > 1  # several micro-batches
    v_BT, v_BK = _ref_values(ref, batch)
    act = batch.token_turn_BT >= 0
    assert torch.equal(batch.token_values_BT[act], v_BT[act])
    assert torch.equal(batch.values_BK, v_BK)  # bootstrap slots of the truncated episodes included
    adv_ref = compute("gae", batch.with_values(values_BK=v_BK, token_values_BT=v_BT), **ref.config.estimator_cfg)
    assert torch.equal(adv.token_BT, adv_ref.token_BT)
    # perturb the critics identically first, so values and returns are not all zero
    for tr in (new, ref):
        torch.manual_seed(3)
        with torch.no_grad():
            tr.critics["agent"].model.head.weight.normal_(0.0, 0.5)
            tr.critics["agent"].model.head.bias.fill_(0.3)
    batch, adv, _, _ = new._credit("agent", eps)
    old = _ref_values(ref, batch)
    assert torch.equal(batch.values_BK, old[1]) and bool(old[1].abs().sum() > 0)
    metrics = new.critics["agent"].fit(batch, adv)
    assert torch.isfinite(torch.tensor(metrics["vf_loss"])) and metrics["vf_loss"] > 0
    _ref_critic_update(ref, batch, adv, old)
    assert torch.equal(params_vector(new.critics["agent"].model), params_vector(ref.critics["agent"].model))


# ---------------------------------------------------------------------- row bookkeeping

_turn = st.tuples(st.integers(0, 4), st.integers(1, 3))  # (observation tokens, action tokens)
_episode = st.tuples(st.lists(_turn, min_size=1, max_size=4), st.integers(0, 3), st.booleans(), st.booleans())


@settings(max_examples=60, deadline=None)
@given(st.lists(_episode, min_size=1, max_size=4))
def test_end_rows_and_row_turn_masks(specs: list[tuple[list[tuple[int, int]], int, bool, bool]]) -> None:
    """For any mix of full and per-turn episodes: the sequence valued after the final observation is
    the whole episode (full), the final observation's prompt (per-turn), or the last turn's row when
    there is none; each row's turn mask holds exactly the turns that row's action tokens belong to."""
    eps, tok = [], iter(range(1, 10**6))
    for turns, n_final, truncated, per_turn in specs:
        ts = tuple(Turn(obs_ids=[next(tok) for _ in range(no)], action_ids=[next(tok) for _ in range(na)])
                   for no, na in turns)  # fmt: skip
        eps.append(Episode(turns=ts, terminated=not truncated, truncated=truncated, history="window:1" if per_turn else "full",
                           final_obs_ids=tuple(next(tok) for _ in range(n_final))))  # fmt: skip
    batch = CreditBatch.from_episodes(eps)
    lengths_B = torch.tensor(row_lengths(batch.attention_mask_BT))
    start_B = _end_row_starts(batch, lengths_B)
    for b, e in enumerate(eps):
        got = batch.ids_BT[b, int(start_B[b]) : int(lengths_B[b])].tolist()
        last = [*e.turns[-1].obs_ids, *e.turns[-1].action_ids]
        whole = [i for t in e.turns for i in (*t.obs_ids, *t.action_ids)] + list(e.final_obs_ids)
        assert got == (whole if not e.per_turn_rows else list(e.final_obs_ids) or last)
    ep_R = batch.row_episode_R
    mask_RK = _row_turn_mask(batch, ep_R)
    for r in range(batch.R):
        turns_in_row = set(batch.token_turn_RT[r][batch.token_turn_RT[r] >= 0].tolist())
        assert set(mask_RK[r].nonzero().squeeze(-1).tolist()) == turns_in_row


# ---------------------------------------------------------------------- window mode


def _window_batch(policy: Any) -> tuple[list[Any], CreditBatch]:
    from creditgym.agents import Collector, Sampling

    col = Collector(policy, DEVICE, group_size=2, env_kwargs={"difficulty": 1, "max_turns": 3},
                    sampling=Sampling(max_new_tokens=8))  # fmt: skip
    try:
        eps = col.collect(1, seed=5)
    finally:
        col.close()
    return eps, CreditBatch.from_episodes(eps)


def _critic_alone(vm: Any, ids: list[int]) -> torch.Tensor:
    """The critic's token values of one sequence run on its own."""
    ids_1T = torch.tensor([ids])
    with torch.no_grad():
        vm.eval()
        return vm(ids_1T, torch.ones_like(ids_1T))[0]


def test_window_values_are_read_off_each_turns_own_prompt(tiny_policy) -> None:
    """In window mode turn k's value is the critic on turn k's prompt alone (read at its first action
    token), and a truncated episode's bootstrap value is the critic on the final observation's window
    prompt alone (read after its last token), not on the episode's prompts strung together."""
    eps, batch = _window_batch(tiny_policy)
    assert all(e.history.startswith("window") for e in eps)  # Device-v0's default history
    assert batch.R > batch.B and any(e.truncated and e.final_obs_ids for e in eps)
    tr = PPOTrainer(tiny_policy, DEVICE, PPOConfig(steps=1, tensorboard=False, estimator_cfg={"level": "turn"}))
    vm = tr.critics["agent"].model
    with torch.no_grad():  # a non-zero critic, so every value differs by context
        vm.head.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(0))
    out = tr.critics["agent"].attach_values(batch)
    for b, e in enumerate(eps):
        pos = 0
        for k, t in enumerate(e.turns):
            v_T = _critic_alone(vm, [*t.obs_ids, *t.action_ids])
            want = v_T[len(t.obs_ids) :]
            pos += len(t.obs_ids)
            torch.testing.assert_close(out.values_BK[b, k], want[0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(out.token_values_BT[b, pos : pos + len(t.action_ids)], want, rtol=1e-5, atol=1e-6)
            pos += len(t.action_ids)
        if e.truncated:
            want_end = _critic_alone(vm, [*e.final_obs_ids, 0])[-1]
            torch.testing.assert_close(out.values_BK[b, e.num_turns], want_end, rtol=1e-5, atol=1e-6)


def _record_critic_widths(tr: PPOTrainer) -> list[int]:
    widths: list[int] = []
    vm = tr.critics["agent"].model
    inner = vm.forward

    def spy(ids_BT: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
        widths.append(int(ids_BT.shape[1]))
        return inner(ids_BT, *a, **k)

    vm.forward = spy  # type: ignore[method-assign]
    return widths


@pytest.mark.parametrize("level", ["token", "turn"])
def test_ppo_two_steps_on_device_in_window_mode(tiny_policy, tmp_path, level: str) -> None:
    """Two PPO steps on Device-v0 (window history by default): finite losses, a trained critic, and
    every critic forward pass at most one turn wide (a turn's row, or a final observation's prompt)."""
    from creditgym.store import RolloutStore

    # KL and entropy on: the policy's gradient runs even when every reward ties
    cfg = PPOConfig(steps=2, num_groups=1, group_size=2, max_new_tokens=8, lr=1e-3, tensorboard=False, seed=1,
                    env_kwargs={"difficulty": 1, "max_turns": 3}, out_dir=str(tmp_path), kl_coef=0.01,
                    entropy_coef=0.01,
                    estimator_cfg={"level": level, "gamma": 1.0, "lam": 0.95})  # fmt: skip
    tr = PPOTrainer(tiny_policy, DEVICE, cfg)
    with torch.no_grad():  # values that differ by state: TD errors to regress on even when every reward is 0
        tr.critics["agent"].model.head.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(0))
    widths = _record_critic_widths(tr)
    critic_before = params_vector(tr.critics["agent"].model).clone()
    tr.train()
    eps = RolloutStore(tmp_path / "episodes.jsonl").read()
    assert len(eps) == 4 and all(e.history.startswith("window") for e in eps)
    for m in tr.history:
        for key in ("pg_loss", "grad_norm", "vf_loss", "explained_variance", "adv/std"):
            assert torch.isfinite(torch.tensor(m[key])), key
        assert m["collector_truncated"] == 0.0
    assert any(m["adv/gae/frac_bootstrapped"] > 0 for m in tr.history)  # a final window prompt was valued
    assert all(m["vf_loss"] > 0 for m in tr.history)
    assert not torch.equal(critic_before, params_vector(tr.critics["agent"].model))
    longest_turn = max(len(t.obs_ids) + len(t.action_ids) for e in eps for t in e.turns)
    longest_final = max(len(e.final_obs_ids) + 1 for e in eps)  # + the dummy slot read for the bootstrap
    longest_episode = max(sum(len(t.obs_ids) + len(t.action_ids) for t in e.turns) for e in eps)
    assert widths and max(widths) <= max(longest_turn, longest_final) < longest_episode
