"""GoldAnswerProbe and SIOPProbe: hand-computed values, a loop reference, properties, Collector wiring."""

from __future__ import annotations

import math

import creditgym_test_rollout_fakes as F  # loaded by tests/agents/conftest.py
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from creditgym import CreditBatch, Episode, Turn
from creditgym.agents import Collector, GoldAnswerProbe, ScriptedPolicy, SIOPProbe
from creditgym.agents.probes import boundaries, episode_ids, extract_answer

TOK = F.ByteTokenizer()


class PositionPolicy:
    """logprob of token t = -0.1 * t (position only): probe values have closed forms."""

    tokenizer = TOK

    def logprobs(self, ids_BT, attention_mask_BT, temperature=1.0, grad=False):
        return -0.1 * torch.arange(ids_BT.shape[1], dtype=torch.float32).expand(ids_BT.shape).clone()


class HalfPolicy:
    tokenizer = TOK

    def logprobs(self, ids_BT, attention_mask_BT, temperature=1.0, grad=False):
        return torch.full(ids_BT.shape, math.log(0.5))


def _ep(turns, final=(), group="g", gold=("ab",), answers=None):
    ts = []
    for i, (no, na) in enumerate(turns):
        text = answers[i] if answers else "x"
        ts.append(Turn(obs_ids=[1] * no, action_ids=[2] * na, action_text=text))
    return Episode(turns=tuple(ts), group_id=group, final_obs_ids=final, meta={"gold": list(gold)})


def test_gold_probe_hand_computed():
    ep = _ep([(3, 2)], final=(5,))
    assert boundaries(ep) == [3, 6] and episode_ids(ep) == [1, 1, 1, 2, 2, 5]
    out = GoldAnswerProbe(answer_format="{gold}")([ep], lambda role: PositionPolicy())[0]
    # answer "ab" = 2 tokens at positions L, L+1: mean logprob -0.1 * (L + 0.5)
    assert out.probe0["gold"] == pytest.approx(math.exp(-0.35), abs=1e-6)  # 0.704688
    assert out.turns[0].probe["gold"] == pytest.approx(math.exp(-0.65), abs=1e-6)  # 0.522046
    # default format <answer>ab</answer> = 19 byte tokens: mean position L + 9
    d = GoldAnswerProbe()([ep], lambda role: PositionPolicy())[0]
    assert d.probe0["gold"] == pytest.approx(math.exp(-0.1 * 12), abs=1e-6)


def _loop_reference(policy, ep, answer):
    """Teacher-forced mean logprob with an explicit Python loop over the bigram weights."""
    ids = episode_ids(ep)
    ans = TOK.encode(answer)
    out = []
    for L in boundaries(ep):
        prev, total = ids[L - 1], 0.0
        for a in ans:
            total += float(torch.log_softmax(policy.model.weight[prev].detach(), -1)[a])
            prev = a
        out.append(math.exp(total / len(ans)))
    return out


@given(st.lists(st.tuples(st.integers(1, 5), st.integers(1, 4)), min_size=1, max_size=4), st.integers(0, 3),
       st.text(alphabet="abc7", min_size=1, max_size=4))
def test_gold_probe_matches_loop_reference(shape, final, gold):
    policy = F.TorchBytePolicy(seed=3)
    eps = [_ep(shape, final=(7,) * final, gold=(gold,)), _ep(shape[:1], gold=("zz",))]
    out = GoldAnswerProbe(batch_size=3)(eps, lambda role: policy)
    for ep, o, g in zip(eps, out, (gold, "zz")):
        ref = _loop_reference(policy, ep, f"<answer>{g}</answer>")
        got = [o.probe0["gold"], *[t.probe["gold"] for t in o.turns]]
        assert got == pytest.approx(ref, rel=1e-5)
        assert all(0.0 < v <= 1.0 for v in got)


def test_episode_without_gold_gets_no_score():
    ep = Episode(turns=(Turn(obs_ids=[1], action_ids=[2]),))
    assert GoldAnswerProbe()([ep], lambda r: HalfPolicy())[0].probe0 == {}


def test_extract_answer():
    assert extract_answer("<answer>a</answer> then <answer> Rome </answer>") == "Rome"
    assert extract_answer("no answer") is None
    assert extract_answer("x <guess>7</guess>", "<guess>{gold}</guess>") == "7"


def test_siop_probe_hand_computed():
    eps = [_ep([(2, 1), (1, 1)], answers=["<search>q</search>", f"<answer>{a}</answer>"]) for a in ("Paris", "paris", "Rome")]
    eps.append(_ep([(2, 1)], answers=["no answer here"]))
    eps.append(_ep([(2, 1)], group="other", answers=["<answer>Rome</answer>"]))
    out = SIOPProbe()(eps, lambda r: HalfPolicy())
    q = [o.outcome["siop_q"] for o in out]
    assert q == pytest.approx([0.5, 0.5, 0.25, 0.0, 1.0])  # group "g" has 4 episodes
    phi = math.log(0.5 + 1e-8)
    assert [out[0].probe0["siop"], *[t.probe["siop"] for t in out[0].turns]] == pytest.approx([0.5 * phi] * 3)
    assert out[2].probe0["siop"] == pytest.approx(0.25 * phi)
    assert out[3].probe0["siop"] == 0.0 and out[3].turns[0].probe["siop"] == 0.0
    batch = CreditBatch.from_episodes(out, outcome_key="siop_q", probe_key="siop")
    assert batch.outcome_B.tolist() == pytest.approx(q)
    assert not torch.isnan(batch.probe_BK1[0, :3]).any()


def test_siop_scores_the_mode_answer():
    policy = F.TorchBytePolicy(seed=1)
    eps = [_ep([(2, 1)], answers=[f"<answer>{a}</answer>"]) for a in ("Paris", "paris")]
    out = SIOPProbe()(eps, lambda r: policy)
    ref = _loop_reference(policy, eps[0], "<answer>Paris</answer>")
    assert out[1].probe0["siop"] == pytest.approx(1.0 * math.log(ref[0] + 1e-8), rel=1e-5)


class AnswerGuessEnv(F.GuessNumberEnv):
    metadata = {**F.GuessNumberEnv.metadata, "answer_format": "<guess>{gold}</guess>"}


F.creditgym.register("test/AnswerGuess-v0", AnswerGuessEnv)
F.register_scripted("test/AnswerGuess-v0", expert=F.custom_env.bisect_expert, random=F.custom_env.random_guess)


def test_collector_fills_probes_and_uses_env_answer_format():
    policy = F.TorchBytePolicy(seed=0)
    scripted = ScriptedPolicy.for_env("test/AnswerGuess-v0")
    scripted.logprobs = policy.logprobs  # the probe scores with the policy's logprobs
    col = Collector(scripted, "test/AnswerGuess-v0", group_size=2, probes=[GoldAnswerProbe()])
    eps = col.collect(2, seed=0)
    for ep in eps:
        ref = _loop_reference(policy, ep, f"<guess>{ep.meta['gold'][0]}</guess>")
        assert [ep.probe0["gold"], *[t.probe["gold"] for t in ep.turns]] == pytest.approx(ref, rel=1e-5)
    batch = CreditBatch.from_episodes(eps)
    assert batch.probe_BK1.shape == (4, batch.K + 1)
    n_B = batch.n_turns_B
    assert all(not torch.isnan(batch.probe_BK1[b, : int(n_B[b]) + 1]).any() for b in range(4))
    assert col.stats["probe_s"] > 0
