"""What the report embeds: episodes as compact JSON records with one text span per action token.

`report_data(episodes, credits, ...)` returns a JSON-ready dict:

* `est`: estimator names; `S`: a string table (observations, state keys: groups share them);
* `E`: one record per episode: `id`, `g` group, `k` task, `r` role, `s` success (0/1), `R` return,
  `x` 1 when truncated, `v` the policy version that generated it (`meta["policy_version"]`, when
  recorded), `f` final observation (string index), `q` probe0, `mc` / `se` the
  Monte-Carlo truth per turn and its standard error (when saved with the episode), `T` turns and `A`
  advantages (one entry per estimator: `k` per turn, `t` per turn a number when every action token
  has that turn's value, else one per token; None where the episode carries no credit);
* a turn: `o` observation (string index), `a` the action text as the tokens decode (token ids when no
  tokenizer fits, the action text then in `at`), `L` each token's length in UTF-16 code units
  (JavaScript string indices), `lp` logprobs (absent when all 0), `m`
  loss mask (absent when all 1), `w` reward, `sk` state key (string index), `p` probe values, `iv` 1
  when invalid;
* `trees`: for groups of tree rollouts (`Episode.node_ids` set), `[node, parent, turn, label,
  [episode indices]]` per prefix-tree node.

Advantages are rounded to 4 digits, logprobs and probes to 3.
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from creditgym import Episode, Turn
from creditgym.agents import ByteTokenizer
from creditgym.trajectory import episode_success

__all__ = ["Decoder", "make_decoder", "report_data", "token_texts", "turn_index_stats"]

Decoder = Callable[[Sequence[int]], list[str]]
"""Action token ids -> one text per token (their concatenation is the decoded action)."""
MAX_OBS_CHARS = 4000
_BYTE_SPECIALS = {i: name for name, i in ByteTokenizer().special_ids.items()}
TREE_LABEL_CHARS = 48


def token_texts(ids: Sequence[int], decode: Callable[[Sequence[int]], str]) -> list[str]:
    """One text per token such that their concatenation is `decode(ids)`: each token's own decoding
    where those join up, else the growth of the decoded prefix (multi-byte characters split over
    tokens land on the token that completes them)."""
    own = [decode([i]) for i in ids]
    full = decode(ids)
    if "".join(own) == full:
        return own
    out, prev = [], ""
    for j in range(1, len(ids) + 1):
        cur = decode(ids[:j])
        stable = cur if j == len(ids) else cur.rstrip("\ufffd")  # a partial character waits for its last token
        if stable.startswith(prev):
            out.append(stable[len(prev) :])
            prev = stable
        else:
            out.append("")
    return out if "".join(out) == full else [full] + [""] * (len(ids) - 1)


def _byte_texts(ids: Sequence[int]) -> list[str]:
    """ByteTokenizer ids (0-255 bytes, specials above) -> texts, a multi-byte character on its last byte."""
    if max(ids, default=0) < 128:  # ASCII: one character per byte
        return [chr(i) for i in ids]
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out = [dec.decode(bytes([i])) if i < 256 else _BYTE_SPECIALS.get(i, "") for i in ids]
    if out:
        out[-1] += dec.decode(b"", final=True)
    return out


def make_decoder(episodes: Sequence[Episode], tokenizer: Any = None) -> Decoder | None:
    """A per-token decoder: `tokenizer` when given (anything with `decode(ids)`), else the built-in
    byte-level tokenizer when every action decodes to its text with it; None when neither fits."""
    if tokenizer is not None:
        return lambda ids: token_texts(list(ids), lambda x: tokenizer.decode(list(x)))
    byte = ByteTokenizer()
    turns = [t for ep in episodes for t in ep.turns]
    if turns and all(
        max(t.action_ids, default=0) < byte.vocab_size
        and byte.decode(t.action_ids, skip_special_tokens=True) == t.action_text
        for t in turns[:256]
    ):
        return _byte_texts
    return None


def _utf16_len(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


def _r(x: float, digits: int) -> float | None:
    x = float(x)
    return round(x, digits) if math.isfinite(x) else None


def _interner(table: list[str], index: dict[str, int], limit: int) -> Callable[[str], int]:
    def intern(s: str) -> int:
        if len(s) > limit:
            s = s[:limit] + f"\n… [{len(s) - limit} more characters]"
        if s not in index:
            index[s] = len(table)
            table.append(s)
        return index[s]

    return intern


def _turn_record(turn: Turn, decode: Decoder | None, intern: Callable[[str], int]) -> dict[str, Any]:
    if decode is not None:
        texts = decode(turn.action_ids)
    else:  # no tokenizer: one placeholder per token id, the action text in the tooltip
        texts = [f"⟨{i}⟩" for i in turn.action_ids]
    rec: dict[str, Any] = {"o": intern(turn.obs_text), "a": "".join(texts), "L": [_utf16_len(s) for s in texts]}
    if decode is None:
        rec["at"] = turn.action_text
    logprobs, mask = turn.action_logprobs or (), turn.action_loss_mask or ()  # filled by Turn itself
    if any(logprobs):
        rec["lp"] = [_r(x, 3) for x in logprobs]
    if not all(mask):
        rec["m"] = list(mask)
    rec["w"] = _r(turn.reward, 4)
    rec["sk"] = intern(turn.state_key)
    if turn.probe:
        rec["p"] = {k: _r(v, 3) for k, v in turn.probe.items() if isinstance(v, (int, float))}
    if turn.invalid:
        rec["iv"] = 1
    return rec


def _advantage_record(credit: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if credit is None:
        return None
    tokens: list[Any] = []
    for tok in credit["token"]:
        constant = len(tok) > 0 and tok.count(tok[0]) == len(tok)
        tokens.append(_r(tok[0], 4) if constant else [_r(x, 4) for x in tok])
    return {"k": [_r(x, 4) for x in credit["turn"]], "t": tokens}


def _mc_truth(ep: Episode) -> dict[str, Any]:
    truth = ep.meta.get("mc_truth")
    if not isinstance(truth, dict) or len(truth.get("adv", ())) != ep.num_turns:
        return {}
    out = {"mc": [_r(x, 4) for x in truth["adv"]]}
    if len(truth.get("se", ())) == ep.num_turns:
        out["se"] = [_r(x, 4) for x in truth["se"]]
    return out


def _trees(episodes: Sequence[Episode]) -> dict[str, list[list[Any]]]:
    trees: dict[str, dict[int, list[Any]]] = {}
    for e, ep in enumerate(episodes):
        if ep.node_ids is None:
            continue
        nodes = trees.setdefault(f"{ep.group_id}|{ep.role}", {})
        parent = -1
        for k, (node, turn) in enumerate(zip(ep.node_ids, ep.turns)):
            if node not in nodes:
                nodes[node] = [node, parent, k, turn.action_text[:TREE_LABEL_CHARS], []]
            nodes[node][4].append(e)
            parent = node
    return {g: list(nodes.values()) for g, nodes in trees.items()}


def report_data(
    episodes: Sequence[Episode],
    credits: Mapping[str, Sequence[Mapping[str, Any] | None]],
    tokenizer: Any = None,
    max_obs_chars: int = MAX_OBS_CHARS,
) -> dict[str, Any]:
    """The JSON-ready dict of the module docstring. `credits` maps each estimator name to one
    `meta["credit"]`-shaped dict (or None) per episode; `max_obs_chars` truncates long observations."""
    for name, per_episode in credits.items():
        if len(per_episode) != len(episodes):
            raise ValueError(f"credits[{name!r}] has {len(per_episode)} entries for {len(episodes)} episodes")
    decode = make_decoder(episodes, tokenizer)
    table: list[str] = []
    intern = _interner(table, {}, max_obs_chars)
    records = []
    for i, ep in enumerate(episodes):
        rec: dict[str, Any] = {
            "id": ep.episode_id, "g": ep.group_id, "k": ep.task_id, "r": ep.role, "s": int(episode_success(ep) > 0),
            "R": _r(ep.total_reward, 4), "f": intern(ep.final_obs_text),
            "T": [_turn_record(t, decode, intern) for t in ep.turns],
            "A": [_advantage_record(c[i]) for c in credits.values()],
        }  # fmt: skip
        if ep.truncated:
            rec["x"] = 1
        if isinstance(ep.meta.get("policy_version"), int):  # trainers.async_collect.POLICY_VERSION
            rec["v"] = ep.meta["policy_version"]
        if ep.probe0:
            rec["q"] = {k: _r(v, 3) for k, v in ep.probe0.items() if isinstance(v, (int, float))}
        rec.update(_mc_truth(ep))
        records.append(rec)
    return {"est": list(credits), "S": table, "E": records, "trees": _trees(episodes), "tokens": decode is not None}


def turn_index_stats(credits: Sequence[Mapping[str, Any] | None]) -> dict[str, list[float]]:
    """Per turn index k: mean and std of the turn advantages, the share that are exactly 0, and the count."""
    by_k: dict[int, list[float]] = {}
    for c in credits:
        for k, a in enumerate(c["turn"] if c else ()):
            by_k.setdefault(k, []).append(float(a))
    ks = sorted(by_k)
    vals = [np.asarray(by_k[k]) for k in ks]
    return {
        "turn": [float(k) for k in ks],
        "mean": [float(v.mean()) for v in vals],
        "std": [float(v.std()) for v in vals],
        "zero_frac": [float((v == 0).mean()) for v in vals],
        "count": [float(len(v)) for v in vals],
    }
