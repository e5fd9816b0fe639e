"""Registry, loop references, compute's knob checks, `needs`, the error messages of CREDIT.md 1.4, the
standard metrics and the turn -> token broadcast, describe, the custom-estimator example."""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib

import pytest
import torch

from creditgym.credit import (
    COLLECTION_KNOBS,
    ESTIMATORS,
    REFERENCES,
    Advantages,
    broadcast_to_tokens,
    compute,
    describe,
    register_estimator,
)
from creditgym.credit.registry import trains_on_branches

from .fixtures import ATOL, CASES, fixture_F

ALL = {
    "grpo", "dr_grpo", "rloo", "reinforce++", "reinforce++_baseline", "remax", "gae", "turn_return",
    "mt_grpo", "a2tgpo", "pure", "rebn", "gigpo", "tree", "tree_grpo", "spo", "vineppo", "igpo", "siop",
}  # fmt: skip
EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "custom_estimator.py"


def test_every_builtin_is_registered_with_its_needs() -> None:
    assert ALL <= set(ESTIMATORS)
    needs = {name: ESTIMATORS[name].needs for name in ALL}
    assert needs["gae"] == {"values": "critic"}
    assert needs["remax"] == {"greedy": True}
    assert needs["igpo"] == needs["a2tgpo"] == {"probe": "gold"}
    assert needs["siop"] == {"probe": "siop", "outcome_key": "siop_q"}
    assert needs["vineppo"] == {"branches": {"at": "every_turn", "n": 9, "train": False}, "values": "mc"}
    assert needs["spo"] == {"branches": {"at": "every_turn", "n": 4, "train": {"variant": "tree"}}, "values": "mc"}
    tree_needs = {"branches": {"at": "tree", "n": 2, "depth": 2, "train": True}, "optional": True}
    assert needs["tree"] == needs["tree_grpo"] == tree_needs
    plain = ALL - {"gae", "remax", "igpo", "a2tgpo", "siop", "vineppo", "spo", "tree", "tree_grpo"}
    assert all(needs[n] == {} for n in plain)


def test_every_estimator_has_a_reference_and_a_case() -> None:
    builtins = {n for n, f in ESTIMATORS.items() if f.__module__.startswith("creditgym.credit.")}
    assert builtins <= set(REFERENCES)
    assert builtins <= {name for name, _ in CASES}


def test_branches_train_flag_resolves_against_the_estimator_knobs() -> None:
    spo, vine, tree = ESTIMATORS["spo"], ESTIMATORS["vineppo"], ESTIMATORS["tree"]
    assert not trains_on_branches(spo, spo.needs["branches"], {})  # chain by default: values only
    assert trains_on_branches(spo, spo.needs["branches"], {"variant": "tree"})
    assert not trains_on_branches(vine, vine.needs["branches"], {})
    assert trains_on_branches(tree, tree.needs["branches"], {})
    assert trains_on_branches(tree, {"at": "tree", "n": 2, "depth": 1}, {})  # no flag: train on them


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"at": "sometimes", "n": 2}, "'at'"),
        ({"at": "every_turn", "n": 0}, "'n'"),
        ({"at": "tree", "n": 2}, "'depth'"),
        ({"at": "every_turn", "n": 2, "train": "yes"}, "'train'"),
        ({"at": "every_turn", "n": 2, "width": 3}, "unknown keys"),
        ([("at", "tree")], "must be a dict"),
    ],
)
def test_bad_branches_spec_is_refused_at_registration(spec: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        register_estimator("test_bad_branches", needs={"branches": spec})


def test_unknown_knob_and_collection_knobs_raise_type_error() -> None:
    F = fixture_F()
    with pytest.raises(TypeError, match=r"estimator 'grpo' got unknown knob\(s\) \['gama'\]"):
        compute("grpo", F, gama=1.0)
    for knob in COLLECTION_KNOBS:
        with pytest.raises(TypeError, match="collection knobs"):
            compute("igpo", F, **{knob: "gold"})
    with pytest.raises(KeyError, match="unknown estimator 'nope'"):
        compute("nope", F)


def test_bad_knob_message() -> None:
    with pytest.raises(ValueError) as e:
        compute("gigpo", fixture_F(), norm="minmax")
    assert str(e.value) == "estimator 'gigpo': norm must be one of ('mean', 'std'), got 'minmax'"


def test_missing_input_messages() -> None:
    F = dataclasses.replace(fixture_F(), probe_BK1=None, values_BK=None)
    with pytest.raises(ValueError) as e:
        compute("igpo", F)
    assert str(e.value) == (
        "estimator 'igpo' needs probe values: batch.probe_BK1 is None; run the Collector with "
        "probes=[GoldAnswerProbe()]"
    )
    with pytest.raises(ValueError) as e:
        compute("remax", F)
    assert str(e.value) == (
        "estimator 'remax' needs the greedy-rollout return: batch.greedy_return_B is None; collect with "
        "greedy_baseline=True (Episode.meta['greedy_return'])"
    )
    with pytest.raises(ValueError, match=r"estimator 'vineppo' needs Monte-Carlo values: batch.values_BK is None"):
        compute("vineppo", F)
    with pytest.raises(ValueError, match=r"estimator 'gae' needs token values .*batch.token_values_BT is None"):
        compute("gae", dataclasses.replace(F, truncated_B=torch.zeros(5, dtype=torch.bool),
                                           terminated_B=torch.ones(5, dtype=torch.bool)))  # fmt: skip
    with pytest.raises(ValueError, match=r"estimator 'spo' needs sampling log-probabilities"):
        compute("spo", fixture_F(), prob_mask=True)


def test_missing_bootstrap_message() -> None:
    F = fixture_F()
    b = dataclasses.replace(
        F,
        turn_mask_BK=torch.ones(5, 3, dtype=torch.bool),
        rewards_BK=torch.ones(5, 3),
        state_BK=torch.zeros(5, 3, dtype=torch.int64),
        node_BK=torch.arange(15).view(5, 3),
        truncated_B=torch.tensor([False, False, True, False, False]),
        terminated_B=torch.tensor([True, True, False, True, True]),
    )
    with pytest.raises(ValueError) as e:
        compute("gae", b, level="turn")
    assert str(e.value) == (
        "estimator 'gae' needs a bootstrap value for truncated episode 2: values_BK has no column 3 (n_b); "
        "pack values with the bootstrap column or pass bootstrap_truncated=False"
    )
    assert compute("gae", b, level="turn", bootstrap_truncated=False).turn_BK.shape == (5, 3)


def test_nan_probe_message() -> None:
    F = fixture_F()
    probe = F.probe_BK1.clone()
    probe[2, 1] = float("nan")
    probe[4, 1] = float("nan")  # after the last turn of a one-turn episode: unused, no error
    with pytest.raises(ValueError) as e:
        compute("igpo", dataclasses.replace(F, probe_BK1=probe))
    assert str(e.value) == "estimator 'igpo': probe_BK1 is NaN at 1 valid positions (first: episode 2, index 1)"
    probe[2, 1] = 0.2
    assert not torch.isnan(compute("igpo", dataclasses.replace(F, probe_BK1=probe)).turn_BK).any()


def test_register_needs_keys_and_duplicates() -> None:
    with pytest.raises(ValueError, match="unknown needs keys"):
        register_estimator("bad_needs", needs={"critic": True})

    def other(batch, *, x: float = 1.0) -> Advantages:
        raise AssertionError

    with pytest.raises(ValueError, match="already registered"):
        register_estimator("grpo")(other)


def test_fixture_F_grpo_metrics() -> None:
    m = compute("grpo", fixture_F()).metrics
    assert m["adv/frac_zero_tokens"] == pytest.approx(6 / 22, abs=ATOL)
    assert m["adv/turn0/mean"] == pytest.approx(0, abs=ATOL)
    assert m["adv/turn0/std"] == pytest.approx(0.8660, abs=ATOL)
    assert m["adv/turn1/mean"] == pytest.approx(0.1768, abs=ATOL)
    assert m["adv/turn1/std"] == pytest.approx(0.8898, abs=ATOL)
    assert m["adv/turn2/mean"] == pytest.approx(0.5, abs=ATOL)
    assert m["adv/turn2/std"] == pytest.approx(0.7071, abs=ATOL)
    assert m["groups/frac_all_equal"] == 0
    assert m["groups/num"] == 2 and m["batch/frac_truncated"] == pytest.approx(0.2)
    assert m["batch/mean_turns"] == pytest.approx(11 / 5)
    assert "adv/turn3/mean" not in m


def test_broadcast_example() -> None:
    """CREDIT.md 1.5."""
    tt = torch.tensor([[-1, 0, 0, -1, 1, 1]])
    lm = torch.tensor([[0, 1, 0, 0, 1, 1]], dtype=torch.bool)
    out = broadcast_to_tokens(torch.tensor([[0.5, -2.0]]), tt, lm)
    assert out.tolist() == [[0, 0.5, 0, 0, -2, -2]]


def test_describe_renders_metrics_and_rows() -> None:
    F = fixture_F()
    text = describe(compute("grpo", F), F)
    assert "adv/turn1/mean" in text and "ep   1 group   0" in text and "trunc" in text
    assert "+0.7071" in text


def test_custom_estimator_example() -> None:
    spec = importlib.util.spec_from_file_location("custom_estimator_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert ESTIMATORS["discounted_center"].needs == {}
    batch = mod.tiny_batch()
    adv = compute("discounted_center", batch, gamma=0.5)
    # R = [1, 0], baseline 0.5: win gets 0.5 * [0.25, 0.5, 1], loss -0.5 * [0.5, 1]
    assert adv.turn_BK.flatten().tolist() == pytest.approx([0.125, 0.25, 0.5, -0.25, -0.5, 0])
    assert adv.token_BT[0].tolist() == pytest.approx([0, 0, 0.125, 0.125, 0, 0, 0.25, 0.25, 0, 0, 0.5, 0.5])
    assert "adv/mean" in adv.metrics
    with pytest.raises(TypeError, match="unknown knob"):
        compute("discounted_center", batch, lam=0.5)
    spec.loader.exec_module(mod)  # re-importing the same example is not a duplicate
