"""The Collector with the real tiny HF model: recorded logprobs agree with a teacher-forced pass on
the packed batch, probes batch through HFPolicy.logprobs, branches of an HF policy replay exactly."""

from __future__ import annotations

import creditgym_test_rollout_fakes as F  # loaded by tests/agents/conftest.py
import pytest
import torch

from creditgym import CreditBatch
from creditgym.agents import Collector, GoldAnswerProbe, Sampling


@pytest.fixture(scope="module")
def policy():
    tiny = pytest.importorskip("creditgym.agents.tiny")
    torch.set_num_threads(1)
    return tiny.build(seed=0)


def test_tiny_collect_logprobs_match_packed_forward(policy):
    rec = F.Recording(policy)
    col = Collector(rec, "GuessNumber-v0", group_size=2, sampling=Sampling(max_new_tokens=8),
                    probes=[GoldAnswerProbe(answer_format="<guess>{gold}</guess>")])
    eps = col.collect(1, seed=0)
    batch = CreditBatch.from_episodes(eps)
    lp_BT = policy.logprobs(batch.ids_BT, batch.attention_mask_BT)
    act = batch.token_turn_BT >= 0
    assert float((lp_BT - batch.logprobs_BT)[act].abs().max()) < 1e-4
    assert not batch.loss_mask_BT[~act].any()
    assert batch.probe_BK1 is not None
    for ep in eps:
        ids = [i for t in ep.turns for i in (*t.obs_ids, *t.action_ids)]
        ctx = list(ep.turns[0].obs_ids)
        ans = policy.tokenizer.encode(f"<guess>{ep.meta['gold'][0]}</guess>", add_special_tokens=False)
        seq = torch.tensor([ctx + ans])
        want = policy.logprobs(seq, torch.ones_like(seq))[0, len(ctx):].mean().exp()
        assert ep.probe0["gold"] == pytest.approx(float(want), rel=1e-4)
        assert len(ids) >= len(ctx)
    branches = col.branch(eps[:1], [1, 3], 1)
    assert all(b.turns[: b.meta["branch_at"]] == next(e for e in eps if e.episode_id == b.meta["branch_of"]).turns[: b.meta["branch_at"]]
               for b in branches)
