"""Unit tests of the shared parsing helpers (envs/parsing.py, ENVS.md section 1.7)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from creditgym.envs.parsing import (
    char_f1,
    exact_match,
    extract_json_object,
    f1,
    find_blocks,
    first_block,
    normalize_answer,
    strip_think,
)


def test_find_blocks_order_offsets_and_non_greedy():
    text = "x<a>one</a> <b>two</b><a>three</a>"
    blocks = find_blocks(text, ["a", "b"])
    assert [(b.tag, b.body) for b in blocks] == [("a", "one"), ("b", "two"), ("a", "three")]
    b = blocks[1]
    assert text[b.start : b.end] == "<b>two</b>" and text[b.body_start : b.body_end] == "two"


def test_find_blocks_dotall_case_sensitive_unclosed_and_empty_tags():
    assert find_blocks("<a>line1\nline2</a>", ["a"])[0].body == "line1\nline2"
    assert find_blocks("<A>x</A>", ["a"]) == []
    assert find_blocks("<a>never closed", ["a"]) == []
    assert find_blocks("<a>x</a>", []) == []
    assert find_blocks("<a.b>x</a.b>", ["a.b"])[0].body == "x"  # tag names are escaped
    assert find_blocks("<a.b>x</a.b>", ["a"]) == []


def test_find_blocks_does_not_nest():
    blocks = find_blocks("<a><a>inner</a></a>", ["a"])
    assert [b.body for b in blocks] == ["<a>inner"]


def test_first_block():
    assert first_block("<s>1</s><s>2</s>", "s").body == "1"
    assert first_block("nothing", "s") is None


def test_strip_think():
    assert strip_think("<think>a</think>B<think>c\n</think>D") == "BD"
    assert strip_think("keep<think>unfinished") == "keep"


@pytest.mark.parametrize(
    "text, obj",
    [
        ('call {"a": 1} then', {"a": 1}),
        ('{"code": "print(\'}\')"}', {"code": "print('}')"}),
        ('{"s": "esc \\" }"}', {"s": 'esc " }'}),
        ('{"n": {"m": [1, {"k": 2}]}} tail {"x": 0}', {"n": {"m": [1, {"k": 2}]}}),
    ],
)
def test_extract_json_object_ok(text, obj):
    assert extract_json_object(text) == (obj, None)


@pytest.mark.parametrize("text, fragment", [("no json", "no JSON"), ('{"a": 1', "unbalanced"), ("{'a': 1}", "invalid JSON")])
def test_extract_json_object_errors(text, fragment):
    obj, err = extract_json_object(text)
    assert obj is None and fragment in err


def test_extract_json_object_deep_nesting_never_raises():
    obj, err = extract_json_object("[" * 10 + "{" * 100_000 + "}" * 100_000)
    assert (obj is None and err) or isinstance(obj, dict)


def test_normalize_answer_squad_rules():
    assert normalize_answer("The  Velmora, Systems!") == "velmora systems"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theater") == "theater"  # articles only as whole words
    assert normalize_answer("") == ""


def test_exact_match_and_f1_by_hand():
    assert exact_match("the Velmora Systems.", ["Velmora Systems"]) == 1.0
    assert exact_match("Velmora", ["Velmora Systems"]) == 0.0
    # prediction "velmora systems labs" vs gold "velmora systems": p = 2/3, r = 1, F1 = 0.8
    assert f1("Velmora Systems Labs", ["Velmora Systems"]) == pytest.approx(0.8)
    # max over golds: second gold matches exactly
    assert f1("Kalo", ["Kalo Venn", "Kalo"]) == pytest.approx(1.0)
    assert f1("nothing shared", ["Kalo"]) == 0.0
    assert f1("", ["Kalo"]) == 0.0


@given(st.text(max_size=40), st.lists(st.text(max_size=20), min_size=1, max_size=3))
def test_scores_are_bounded_and_em_implies_f1(pred, golds):
    em, score = exact_match(pred, golds), f1(pred, golds)
    assert em in (0.0, 1.0) and 0.0 <= score <= 1.0
    if em == 1.0 and normalize_answer(pred):
        assert score == pytest.approx(1.0)


@given(st.text(max_size=60))
def test_normalize_is_idempotent(s):
    assert normalize_answer(normalize_answer(s)) == normalize_answer(s)


def test_char_f1_by_hand():
    # "ab" vs "abc": bigrams {ab} and {ab, bc}; p = 1, r = 1/2, F1 = 2/3
    assert char_f1("ab", ["abc"]) == pytest.approx(2 / 3)
    # "Tuth Bar" -> "tuth_bar" (7 bigrams) vs "tuthbar" (6 bigrams tu ut th hb ba ar): shared tu ut th ba ar
    # = 5, p = 5/7, r = 5/6, F1 = 2*5/(7+6) = 10/13
    assert char_f1("Tuth Bar", ["Tuthbar"]) == pytest.approx(10 / 13)
    assert char_f1("The Tuthbar.", ["Kalo", "tuthbar"]) == 1.0  # normalized, max over golds
    assert char_f1("xyz", ["Kalo"]) == 0.0 and char_f1("", ["Kalo"]) == 0.0
    assert char_f1("k", ["K"]) == 1.0  # one character: the character itself
    # repetition loses precision: a looping copy scores below the clean near-copy
    assert char_f1("Tuthba" + "ra" * 20, ["Tuthbar"]) < char_f1("Tuthba", ["Tuthbar"])


@given(st.text(max_size=30), st.lists(st.text(max_size=20), min_size=1, max_size=3))
def test_char_f1_is_bounded_and_one_on_exact_match(pred, golds):
    score = char_f1(pred, golds)
    assert 0.0 <= score <= 1.0 + 1e-12
    if exact_match(pred, golds) == 1.0 and normalize_answer(pred):
        assert score == pytest.approx(1.0)
    assert char_f1(pred, golds) == max(char_f1(pred, [g]) for g in golds)
