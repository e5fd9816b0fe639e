"""HFPolicy: recorded logprobs equal teacher-forced ones, sampling filters, stops, LoRA, batching."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from creditgym.agents import Context, Sampling, tiny
from creditgym.agents.hf import HFPolicy, filter_logits, sample_categorical
from creditgym.agents.logprobs import token_logprobs

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> HFPolicy:
    return tiny.build(seed=0, cache_dir=tmp_path_factory.mktemp("tiny"), env_ids=())


def _contexts(policy: HFPolicy, n: int) -> list[Context]:
    out = []
    for i in range(n):
        msgs = [
            {"role": "system", "content": "Answer."},
            {"role": "user", "content": "where is it? " * (1 + 2 * i)},
        ]
        ids = policy.tokenizer.apply_chat_template(
            msgs, tokenize=True, add_generation_prompt=True, return_dict=False
        )
        out.append(Context(ids=list(ids), messages=msgs))
    return out


def _pack(policy: HFPolicy, contexts, gens, left: bool = False):
    seqs = [list(c.ids) + list(g.token_ids) for c, g in zip(contexts, gens)]
    T = max(len(s) for s in seqs)
    ids_BT = torch.full((len(seqs), T), policy.pad_token_id)
    mask_BT = torch.zeros_like(ids_BT)
    for b, s in enumerate(seqs):
        sl = slice(T - len(s), T) if left else slice(0, len(s))
        ids_BT[b, sl] = torch.tensor(s)
        mask_BT[b, sl] = 1
    return ids_BT, mask_BT, seqs


def _recorded_vs_forced(policy, contexts, gens, temperature, left=False) -> float:
    ids_BT, mask_BT, seqs = _pack(policy, contexts, gens, left)
    lp_BT = policy.logprobs(ids_BT, mask_BT, temperature=temperature)
    worst = 0.0
    T = ids_BT.shape[1]
    for b, (c, g) in enumerate(zip(contexts, gens)):
        start = (T - len(seqs[b]) if left else 0) + len(c.ids)
        forced = lp_BT[b, start : start + len(g.token_ids)]
        worst = max(worst, (forced - torch.tensor(g.logprobs)).abs().max().item())
    return worst


@pytest.mark.parametrize(
    "sampling",
    [
        Sampling(temperature=1.0, max_new_tokens=24, seed=1),
        Sampling(temperature=0.7, top_p=0.8, top_k=40, max_new_tokens=24, seed=2),
        Sampling(temperature=1.3, top_k=5, max_new_tokens=24, seed=3, stop=(">",)),
        Sampling(temperature=0.0, max_new_tokens=16),
    ],
)
def test_recorded_logprobs_match_teacher_forced(policy, sampling):
    contexts = _contexts(policy, 6)
    gens = policy.generate(contexts, sampling)
    assert len(gens) == 6 and all(len(g.token_ids) == len(g.logprobs) > 0 for g in gens)
    assert all(lp <= 0.0 for g in gens for lp in g.logprobs)
    assert _recorded_vs_forced(policy, contexts, gens, sampling.temperature) < 1e-4
    assert _recorded_vs_forced(policy, contexts, gens, sampling.temperature, left=True) < 1e-4


def test_greedy_picks_teacher_forced_argmax_and_is_batch_independent(policy):
    contexts = _contexts(policy, 5)
    greedy = Sampling(temperature=0.0, max_new_tokens=12)
    gens = policy.generate(contexts, greedy)
    ids_BT, mask_BT, seqs = _pack(policy, contexts, gens)
    with torch.no_grad():
        logits_BTV = policy.forward_logits(ids_BT, mask_BT)
    for b, (c, g) in enumerate(zip(contexts, gens)):
        n = len(c.ids)
        assert logits_BTV[b, n - 1 : n - 1 + len(g.token_ids)].argmax(-1).tolist() == list(g.token_ids)
    alone = [policy.generate([c], greedy)[0].token_ids for c in contexts]
    assert alone == [g.token_ids for g in gens]
    small = HFPolicy(policy.model, policy.tokenizer, max_batch_size=2)
    assert [g.token_ids for g in small.generate(contexts, greedy)] == [g.token_ids for g in gens]


def test_seeded_sampling_is_reproducible(policy):
    contexts = _contexts(policy, 4)
    a = policy.generate(contexts, Sampling(max_new_tokens=20, seed=7))
    b = policy.generate(contexts, Sampling(max_new_tokens=20, seed=7))
    c = policy.generate(contexts, Sampling(max_new_tokens=20, seed=8))
    assert a == b
    assert [g.token_ids for g in a] != [g.token_ids for g in c]
    fresh1 = HFPolicy(policy.model, policy.tokenizer, seed=3).generate(contexts, Sampling(max_new_tokens=10))
    fresh2 = HFPolicy(policy.model, policy.tokenizer, seed=3).generate(contexts, Sampling(max_new_tokens=10))
    assert fresh1 == fresh2


def test_stop_string_ends_generation_and_keeps_its_tokens(policy):
    ctx = _contexts(policy, 1)
    free = policy.generate(ctx, Sampling(temperature=0.0, max_new_tokens=12))[0]
    assert free.finish_reason == "length" and len(free.token_ids) == 12
    stop = policy.tokenizer.decode(list(free.token_ids[:3]))
    stopped = policy.generate(ctx, Sampling(temperature=0.0, max_new_tokens=12, stop=(stop, "\x00never")))[0]
    assert stopped.finish_reason == "stop"
    assert 1 <= len(stopped.token_ids) <= 3
    assert stopped.token_ids == free.token_ids[: len(stopped.token_ids)]
    assert stop in policy.tokenizer.decode(list(stopped.token_ids))


def test_eos_ends_generation(policy):
    ctx = _contexts(policy, 1)
    free = policy.generate(ctx, Sampling(temperature=0.0, max_new_tokens=8))[0]
    eos_policy = HFPolicy(policy.model, policy.tokenizer, eos_token_ids=[free.token_ids[2]])
    g = eos_policy.generate(ctx, Sampling(temperature=0.0, max_new_tokens=8))[0]
    first = list(free.token_ids).index(free.token_ids[2])
    assert g.finish_reason == "stop" and g.token_ids == free.token_ids[: first + 1]
    assert policy.tokenizer.eos_token_id in policy.eos_token_ids


def test_messages_only_context_uses_chat_template(policy):
    ctx = _contexts(policy, 1)[0]
    by_ids = policy.generate([ctx], Sampling(temperature=0.0, max_new_tokens=6))
    by_msgs = policy.generate([Context(messages=ctx.messages)], Sampling(temperature=0.0, max_new_tokens=6))
    assert by_ids == by_msgs
    with pytest.raises(ValueError, match="neither ids nor messages"):
        policy.generate([Context()], Sampling())
    assert policy.generate([], Sampling()) == []


def _loop_token_logprobs(logits_BTV, ids_BT, mask_BT, temperature):
    B, T, _ = logits_BTV.shape
    out = torch.zeros(B, T)
    for b in range(B):
        for t in range(1, T):
            if mask_BT[b, t] and mask_BT[b, t - 1]:
                row = logits_BTV[b, t - 1].double() / (temperature if temperature > 0 else 1.0)
                out[b, t] = float(row[ids_BT[b, t]] - torch.logsumexp(row, 0))
    return out


@pytest.mark.parametrize("temperature", [1.0, 0.5, 0.0])
def test_token_logprobs_matches_loop_reference(temperature):
    gen = torch.Generator().manual_seed(0)
    logits_BTV = torch.randn(3, 7, 11, generator=gen) * 3
    ids_BT = torch.randint(0, 11, (3, 7), generator=gen)
    mask_BT = torch.tensor([[1] * 7, [0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]])
    fast = token_logprobs(logits_BTV, ids_BT, mask_BT, temperature)
    assert torch.allclose(fast, _loop_token_logprobs(logits_BTV, ids_BT, mask_BT, temperature), atol=1e-5)


def test_token_logprobs_hand_example():
    # logits at position 0 are [0, ln 3] -> softmax [1/4, 3/4]; token 1 then token 0 follow.
    logits_BTV = torch.tensor([[[0.0, math.log(3.0)], [math.log(3.0), 0.0], [5.0, 5.0]]])
    ids_BT = torch.tensor([[0, 1, 0]])
    out = token_logprobs(logits_BTV, ids_BT, torch.ones_like(ids_BT), 1.0)
    assert torch.allclose(out, torch.tensor([[0.0, math.log(0.75), math.log(0.75)]]), atol=1e-6)
    # temperature 2 halves the logits: [0, ln 3 / 2] -> p(token 1) = sqrt(3) / (1 + sqrt(3))
    out2 = token_logprobs(logits_BTV, ids_BT, torch.ones_like(ids_BT), 2.0)
    assert out2[0, 1].item() == pytest.approx(math.log(math.sqrt(3) / (1 + math.sqrt(3))), abs=1e-6)


@given(
    st.lists(st.floats(-20, 20, allow_nan=False), min_size=2, max_size=30, unique=True),
    st.integers(0, 40),
    st.floats(0.01, 1.0),
)
def test_filter_logits_properties(values, top_k, top_p):
    x_BV = torch.tensor([values], dtype=torch.float64)
    kept = torch.isfinite(filter_logits(x_BV, top_k=top_k, top_p=top_p))[0]
    assert kept[x_BV[0].argmax()]  # the best token always survives
    if 0 < top_k < len(values):
        assert int(kept.sum()) <= top_k
    probs = torch.softmax(filter_logits(x_BV, top_k=0, top_p=1.0), -1)[0]
    kept_p = torch.isfinite(filter_logits(x_BV, top_p=top_p))[0]
    assert float(probs[kept_p].sum()) >= min(top_p, 1.0) - 1e-9
    # minimal: dropping the least likely kept token would fall below top_p
    if int(kept_p.sum()) > 1:
        assert float(probs[kept_p].sum() - probs[kept_p].min()) < top_p + 1e-9
    # kept tokens are exactly the most likely ones
    assert float(probs[kept_p].min()) >= float(probs[~kept_p].max()) if (~kept_p).any() else True


def test_sample_categorical_matches_the_distribution():
    probs_BV = torch.tensor([[0.1, 0.0, 0.6, 0.3]]).repeat(20000, 1) * 3.0  # unnormalised rows
    draws = sample_categorical(probs_BV, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    assert freq[1] == 0  # zero-probability tokens are never drawn
    assert torch.allclose(freq, torch.tensor([0.1, 0.0, 0.6, 0.3]), atol=0.012)  # ~4 sigma at n=20000
    one_hot = torch.zeros(3, 5)
    one_hot[torch.arange(3), torch.tensor([4, 0, 2])] = 1.0
    assert sample_categorical(one_hot, torch.Generator().manual_seed(1)).tolist() == [4, 0, 2]


def test_logprobs_grad_switch_and_forward_logits(policy):
    ids_BT = torch.tensor([[1, 5, 6, 7, 8], [1, 9, 10, 0, 0]])
    mask_BT = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    no_grad = policy.logprobs(ids_BT, mask_BT)
    assert not no_grad.requires_grad and no_grad.dtype == torch.float32
    assert no_grad[1, 3:].abs().sum() == 0 and no_grad[:, 0].abs().sum() == 0
    one_row_chunks = HFPolicy(policy.model, policy.tokenizer, logits_budget_bytes=1)
    assert torch.allclose(one_row_chunks.logprobs(ids_BT, mask_BT), no_grad, atol=1e-6)
    with_grad = policy.logprobs(ids_BT, mask_BT, grad=True)
    assert with_grad.requires_grad
    assert torch.allclose(with_grad.detach(), no_grad, atol=1e-5)
    with_grad.sum().backward()
    assert policy.model.get_input_embeddings().weight.grad is not None
    policy.model.zero_grad(set_to_none=True)
    assert policy.forward_logits(ids_BT, mask_BT).shape == (2, 5, len(policy.tokenizer))
    assert policy.to("cpu") is policy and policy.device.type == "cpu"


def test_lora_adapter_and_reference_pass(tmp_path):
    base = tiny.build(seed=1, cache_dir=tmp_path, env_ids=())
    ids_BT = torch.tensor([[1, 5, 6, 7, 8, 9]])
    mask_BT = torch.ones_like(ids_BT)
    before = base.logprobs(ids_BT, mask_BT)
    with pytest.raises(ValueError, match="LoRA"):
        with base.reference():
            pass
    base.add_lora(r=4, alpha=8)
    assert base.has_adapter
    trainable = [n for n, p in base.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n in trainable)
    assert torch.allclose(base.logprobs(ids_BT, mask_BT), before, atol=1e-6)  # LoRA B starts at zero
    with torch.no_grad():
        for n, p in base.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    adapted = base.logprobs(ids_BT, mask_BT)
    assert (adapted - before).abs().max() > 1e-3
    with base.reference():
        assert torch.allclose(base.logprobs(ids_BT, mask_BT), before, atol=1e-6)
    ctx = [Context(ids=[1, 5, 6, 7])]
    gen = base.generate(ctx, Sampling(max_new_tokens=8, seed=0))[0]
    forced = base.logprobs(
        torch.tensor([[1, 5, 6, 7, *gen.token_ids]]), torch.ones(1, 4 + len(gen.token_ids))
    )
    assert (forced[0, 4:] - torch.tensor(gen.logprobs)).abs().max() < 1e-4


def test_save_and_reload_round_trip(policy, tmp_path):
    path = policy.save(tmp_path / "saved")
    again = HFPolicy.from_pretrained(path)
    ctx = _contexts(policy, 2)
    s = Sampling(temperature=0.0, max_new_tokens=6)
    assert [g.token_ids for g in again.generate(ctx, s)] == [g.token_ids for g in policy.generate(ctx, s)]
    with pytest.raises(FileNotFoundError, match="no config"):
        HFPolicy.from_pretrained(tmp_path / "missing")


@pytest.mark.gpu
def test_cuda_generation_throughput(policy, tmp_path):
    import time

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    gpu = HFPolicy.from_pretrained(policy.save(tmp_path / "gpu"), device="cuda", max_batch_size=64)
    contexts = _contexts(gpu, 64)
    gpu.generate(contexts[:4], Sampling(max_new_tokens=8, seed=0))
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    gens = gpu.generate(contexts, Sampling(max_new_tokens=128, seed=0))
    torch.cuda.synchronize()
    n = sum(len(g.token_ids) for g in gens)
    print(f"tiny HFPolicy on CUDA: {n / (time.perf_counter() - t0):.0f} tokens/s at batch 64")
    assert _recorded_vs_forced(gpu, contexts[:8], gens[:8], 1.0) < 1e-3


def test_clone_is_an_independent_trainable_copy(policy):
    twin = policy.clone()
    assert twin.tokenizer is policy.tokenizer and twin.seed == policy.seed
    for a, b in zip(policy.model.parameters(), twin.model.parameters(), strict=True):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr() and b.requires_grad
    with torch.no_grad():
        next(twin.model.parameters()).add_(1.0)
    assert not torch.equal(next(policy.model.parameters()), next(twin.model.parameters()))
