"""The report builder: data extraction, token alignment, comparison, trees, curves, size."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from creditgym.store import RolloutStore
from creditgym.viewer import build_report, recredit, view, write_report
from creditgym.viewer.curves import curves_html, read_metrics
from creditgym.viewer.data import report_data, token_texts

from ._episodes import hand_built


def _data(html: str) -> dict:
    raw = re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S).group(1)
    return json.loads(raw)


def _utf16(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


def test_episode_records_hold_what_the_page_shows():
    episodes = recredit(hand_built(), "grpo")
    data = _data(build_report(episodes).html)
    assert data["est"] == ["grpo"] and data["tokens"] is True and len(data["E"]) == len(episodes)
    for rec, ep in zip(data["E"], episodes):
        assert (rec["id"], rec["g"], rec["k"], rec["r"]) == (ep.episode_id, ep.group_id, ep.task_id, ep.role)
        assert rec["s"] == int(ep.outcome["success"]) and rec["R"] == ep.total_reward
        for t, turn in zip(rec["T"], ep.turns):
            assert data["S"][t["o"]] == turn.obs_text and data["S"][t["sk"]] == turn.state_key
            assert t["w"] == turn.reward and t["lp"] == [-0.25] * len(turn.action_ids)
            assert t["p"] == turn.probe and "m" not in t
        assert rec["A"][0]["k"] == [round(x, 4) for x in ep.meta["credit"]["turn"]]
    assert len(data["S"]) == len(set(data["S"]))  # observations and state keys are stored once


def test_tokens_align_with_per_token_advantages():
    ep = hand_built(groups=1, size=2)[0]
    first = ep.turns[0]
    first = dataclasses.replace(first, action_loss_mask=[0] + [1] * (len(first.action_ids) - 1))
    ep = dataclasses.replace(ep, turns=(first, *ep.turns[1:]))
    token = [[0.01 * j for j in range(len(t.action_ids))] for t in ep.turns]
    credit = {"estimator": "x", "cfg": {}, "turn": [0.5, -0.5], "token": token}
    rec = report_data([ep], {"x": [credit]})["E"][0]
    for k, (t, turn) in enumerate(zip(rec["T"], ep.turns)):
        assert len(t["L"]) == len(turn.action_ids) == len(rec["A"][0]["t"][k])
        assert sum(t["L"]) == _utf16(t["a"]) and t["a"] == turn.action_text + "<|im_end|>"
        assert rec["A"][0]["t"][k] == [round(x, 4) for x in token[k]]
    assert rec["T"][0]["m"][0] == 0
    # a multi-byte character lands on the byte that completes it: "é" is 2 bytes, "✓" 3
    spans = token_texts([*"aé✓".encode()], lambda ids: bytes(ids).decode("utf-8", errors="replace"))
    assert spans == ["a", "", "é", "", "", "✓"]
    constant = report_data([ep], {"x": [{**credit, "token": [[0.5] * len(t.action_ids) for t in ep.turns]}]})
    assert constant["E"][0]["A"][0]["t"] == [0.5, 0.5]  # a turn-constant advantage is stored once


def test_tokenizer_pieces_and_no_tokenizer_placeholders():
    class Tok:
        vocab = {1: "he", 2: "llo", 3: " world"}

        def decode(self, ids):
            return "".join(self.vocab[i] for i in ids)

    ep = hand_built(groups=1, size=1)[0]
    ep = dataclasses.replace(ep, turns=(dataclasses.replace(ep.turns[0], action_ids=[1, 2, 3],
                                                            action_logprobs=None, action_loss_mask=None,
                                                            action_text="hello world"),))  # fmt: skip
    credit = {"estimator": "x", "cfg": {}, "turn": [1.0], "token": [[1.0, 1.0, 1.0]]}
    t = report_data([ep], {"x": [credit]}, tokenizer=Tok())["E"][0]["T"][0]
    assert (t["a"], t["L"]) == ("hello world", [2, 3, 6]) and "lp" not in t
    data = report_data([ep], {"x": [credit]})  # ids 1-3 are not this text's bytes: placeholders, flagged
    assert data["tokens"] is False and data["E"][0]["T"][0]["a"] == "⟨1⟩⟨2⟩⟨3⟩"
    assert data["E"][0]["T"][0]["at"] == "hello world"


def test_compare_two_estimators_with_opposite_signs(tmp_path):
    path = tmp_path / "neg.py"
    path.write_text("from creditgym.credit import compute, make_advantages\n"
                    "def negated_grpo(batch):\n    return make_advantages(batch, -compute('grpo', batch).turn_BK)\n")  # fmt: skip
    data = _data(build_report(hand_built(), estimator="grpo", compare=f"{path}:negated_grpo").html)
    assert data["est"] == ["grpo", "negated_grpo"]
    for rec in data["E"]:
        a, b = rec["A"][0]["k"], rec["A"][1]["k"]
        assert all(x * y < 0 for x, y in zip(a, b) if x)


def test_attached_credit_is_used_and_missing_credit_defaults_to_grpo():
    episodes = hand_built()
    custom = [dataclasses.replace(ep, meta={"credit": {"estimator": "mine", "cfg": {}, "turn": [1.0, 2.0],
                                                       "token": [[3.0] * len(t.action_ids) for t in ep.turns]}})
              for ep in episodes]  # fmt: skip
    data = _data(build_report(custom).html)
    assert data["est"] == ["mine"] and data["E"][0]["A"][0]["k"] == [1.0, 2.0]
    assert _data(build_report(episodes).html)["est"] == ["grpo"]


def test_prefix_tree_and_monte_carlo_truth():
    episodes = hand_built(groups=1, size=3)
    episodes = [dataclasses.replace(ep, node_ids=(1, 2 + i), meta={"mc_truth": {"adv": [0.1, -0.2], "se": [0.01, 0.02]}})
                for i, ep in enumerate(episodes)]  # fmt: skip
    data = report_data(episodes, {"grpo": [None] * 3})
    nodes = data["trees"]["g0|agent"]
    assert nodes[0][:3] == [1, -1, 0] and nodes[0][4] == [0, 1, 2]  # the shared root: all three episodes
    assert [n[:3] for n in nodes[1:]] == [[2, 1, 1], [3, 1, 1], [4, 1, 1]]
    assert data["E"][0]["mc"] == [0.1, -0.2] and data["E"][0]["se"] == [0.01, 0.02]


def test_run_curves_from_metrics_jsonl(tmp_path):
    rows = [{"step": s, "reward": 0.1 * s, "success": 0.5, "adv/mean": 0.0, "adv/std": 1.0, "kl_ref": 0.01 * s,
             "entropy": 2.0, "clipfrac": 0.1, "time/rollout_s": 1.5, "time/update_s": 0.5} for s in range(1, 4)]  # fmt: skip
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "rew'  # a torn last line
    (tmp_path / "metrics.jsonl").write_text(text)
    RolloutStore(tmp_path / "episodes.jsonl").extend(hand_built())
    assert read_metrics(tmp_path) == [{k: float(v) for k, v in r.items()} for r in rows]
    svg = curves_html(read_metrics(tmp_path))
    for title in ("reward", "success", "advantages", "KL to the reference", "entropy", "clip fraction",
                  "seconds per stage"):
        assert f">{title}</text>" in svg
    assert svg.count("<polyline") == 9
    html = write_report(tmp_path, tmp_path / "report.html").read_text()
    assert "seconds per stage" in html and "advantage per turn index" in html


def test_page_is_self_contained_and_survives_script_like_text():
    ep = hand_built(groups=1, size=2)
    ep[0] = dataclasses.replace(ep[0], turns=(dataclasses.replace(ep[0].turns[0], obs_text="</script><!-- x"),
                                              *ep[0].turns[1:]))  # fmt: skip
    html = build_report(ep).html
    assert "http://" not in html and "https://" not in html and "<link" not in html
    assert html.count("</script>") == 2 and "</script><!-- x" in _data(html)["S"]
    inline = view(ep)._repr_html_()
    assert inline.startswith("<iframe srcdoc=") and "<script" not in inline


def test_file_size_per_episode():
    """10,000 episodes must stay under 50 MB: 5 kB per episode of a Search-like size."""
    obs = "result: " + "lorem ipsum dolor sit amet " * 50  # ~1.4 kB per observation, shared within a group
    episodes = []
    for ep in hand_built(groups=50, size=8, turns=4):
        turns = tuple(dataclasses.replace(t, obs_text=f"{ep.group_id} {k} {obs}") for k, t in enumerate(ep.turns))
        episodes.append(dataclasses.replace(ep, turns=turns))
    size = len(build_report(episodes, compare="gigpo").html.encode())
    assert size / len(episodes) < 5_000, f"{size / len(episodes):.0f} bytes per episode"


def test_no_episodes_is_an_error():
    with pytest.raises(ValueError, match="at least one episode"):
        build_report([])
