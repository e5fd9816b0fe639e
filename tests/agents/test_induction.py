"""Induction warm-up (agents/induction.py): copy rows, determinism, and that training does something."""

from __future__ import annotations

import math

import pytest
import torch

from creditgym.agents import tiny
from creditgym.agents.induction import (
    InductionConfig,
    digit_piece_ids,
    induction_warmup,
    repeat_batch,
    word_piece_ids,
)

torch.set_num_threads(1)
SMALL = tiny.TinyConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=1)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-induction")


def _policy(root, config=SMALL):
    return tiny.build(seed=0, cache_dir=root, env_ids=(), config=config)


def test_word_pieces_are_alphabetic_and_not_special(root):
    tok = _policy(root).tokenizer
    ids = word_piece_ids(tok)
    assert len(ids) > 20
    assert not set(ids) & set(tok.all_special_ids)
    for i in ids:
        assert tok.decode([i]).strip().isalpha(), tok.decode([i])
    tag_id = tok.convert_tokens_to_ids("<answer>")
    assert tag_id not in ids


def test_repeat_batch_rows_are_a_sequence_twice():
    pieces_V = torch.tensor([5, 7, 11, 13])
    gen = torch.Generator().manual_seed(3)
    ids_BT = repeat_batch(pieces_V, batch_size=6, length=9, gen=gen)
    assert ids_BT.shape == (6, 18)
    assert torch.equal(ids_BT[:, :9], ids_BT[:, 9:])
    assert set(ids_BT.unique().tolist()) <= {5, 7, 11, 13}
    again = repeat_batch(pieces_V, 6, 9, torch.Generator().manual_seed(3))
    assert torch.equal(ids_BT, again)


def test_warmup_is_deterministic_and_lowers_the_copy_loss(root):
    a, b, c = _policy(root), _policy(root), _policy(root)
    cfg = InductionConfig(steps=60, batch_size=8, min_len=4, max_len=8, lr=1e-2, seed=1)
    before = [p.detach().clone() for p in a.model.parameters()]
    ma = induction_warmup(a.model, a.tokenizer, cfg)
    mb = induction_warmup(b.model, b.tokenizer, cfg)
    assert ma == mb
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(p0, p1) for p0, p1 in zip(before, a.model.parameters(), strict=True))
    first = induction_warmup(c.model, c.tokenizer, InductionConfig(steps=1, batch_size=8, min_len=4, max_len=8, seed=1))
    assert first["copy_loss"] > math.log(len(c.tokenizer)) - 0.5  # random init: about uniform
    assert ma["copy_loss"] < first["copy_loss"] - 0.5
    assert 0.0 <= ma["copy_accuracy"] <= 1.0 and ma["steps"] == 60
    assert not a.model.training  # the mode the model came in with (HFPolicy keeps eval mode)


def test_zero_steps_is_a_no_op_and_bad_lengths_say_what_to_fix(root):
    p = _policy(root)
    before = [t.detach().clone() for t in p.model.parameters()]
    m = induction_warmup(p.model, p.tokenizer, InductionConfig(steps=0))
    assert m["steps"] == 0 and math.isnan(m["copy_loss"])
    assert all(torch.equal(x, y) for x, y in zip(before, p.model.parameters(), strict=True))
    with pytest.raises(ValueError, match="min_len <= max_len"):
        induction_warmup(p.model, p.tokenizer, InductionConfig(steps=1, min_len=9, max_len=3))


@pytest.mark.slow
def test_default_warmup_forms_induction_heads_in_the_quickstart_model(tmp_path):
    """The phase change: the quickstart's model copies unseen sequences after the default budget."""
    cfg = tiny.TinyConfig(hidden_size=128, intermediate_size=384, num_layers=2, num_heads=4, num_kv_heads=2)
    p = tiny.build(seed=0, cache_dir=tmp_path, config=cfg)
    m = induction_warmup(p.model, p.tokenizer, InductionConfig())
    assert m["copy_accuracy"] > 0.9, m


def test_digit_pieces_are_the_ten_digits(root):
    tok = _policy(root).tokenizer
    ids = digit_piece_ids(tok)
    assert [tok.decode([i]) for i in ids] == list("0123456789")


def test_digit_fraction_draws_whole_digit_batches_and_zero_replays_the_word_warmup(root, monkeypatch):
    import creditgym.agents.induction as induction

    seen: list[set[int]] = []
    real = induction.repeat_batch

    def spy(pieces_V, batch_size, length, gen):
        ids_BT = real(pieces_V, batch_size, length, gen)
        seen.append(set(ids_BT.unique().tolist()))
        return ids_BT

    monkeypatch.setattr(induction, "repeat_batch", spy)
    p = _policy(root)
    digits, words = set(digit_piece_ids(p.tokenizer)), set(word_piece_ids(p.tokenizer))
    induction_warmup(p.model, p.tokenizer, InductionConfig(steps=40, batch_size=4, min_len=4, max_len=6, digit_fraction=0.5))
    kinds = ["digits" if s <= digits else "words" if s <= words else "mixed" for s in seen]
    assert "mixed" not in kinds and 8 <= kinds.count("digits") <= 32  # about half of 40 batches
    seen.clear()
    induction_warmup(p.model, p.tokenizer, InductionConfig(steps=5, batch_size=4, min_len=4, max_len=6, digit_fraction=1.0))
    assert all(s <= digits for s in seen)
    # digit_fraction 0 draws no coin: the same parameters as the word-only warm-up of earlier versions
    a, b = _policy(root), _policy(root)
    cfg = InductionConfig(steps=10, batch_size=4, min_len=4, max_len=6, seed=2)
    induction_warmup(a.model, a.tokenizer, cfg)
    gen = torch.Generator().manual_seed(2)
    pieces_V = torch.tensor(word_piece_ids(b.tokenizer))
    opt = torch.optim.AdamW(b.model.parameters(), lr=cfg.lr)
    b.model.train()
    for _ in range(cfg.steps):  # the pre-digit loop, written out
        n = int(torch.randint(cfg.min_len, cfg.max_len + 1, (1,), generator=gen))
        ids_BT = real(pieces_V, cfg.batch_size, n, gen)
        logits_BNV = b.model(input_ids=ids_BT).logits[:, n:-1]
        loss = torch.nn.functional.cross_entropy(logits_BNV.reshape(-1, logits_BNV.shape[-1]), ids_BT[:, n + 1 :].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(b.model.parameters(), cfg.max_grad_norm)
        opt.step()
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    with pytest.raises(ValueError, match="digit_fraction"):
        induction_warmup(p.model, p.tokenizer, InductionConfig(steps=1, digit_fraction=1.5))
