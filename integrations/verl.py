"""creditgym envs and credit inside verl (tested against verl 0.9.1: `pip install verl==0.9.1`).

Two pieces, each the smallest hook verl's API has (docs/scale.md, "verl"):

* **envs as an agent loop**: `CreditgymAgentLoop` (agent name `creditgym_agent`) plays one creditgym
  episode per dataset row through verl's server manager, token in, token out: the Collector renders the
  env's observations exactly, each generation is `server_manager.generate(request_id, prompt_ids=...,
  sampling_params=...)`. It returns verl's `AgentLoopOutput`: prompt ids (the first context), response
  ids (every later token: actions and env replies), the response mask (1 on sampled tokens, 0 on env
  tokens), the sampling logprobs and the episode's outcome as `reward_score`; the env's state keys,
  turn boundaries, turn rewards and prefix-tree node ids ride in `extra_fields["creditgym"]`, which
  verl copies into the batch (`non_tensor_batch["creditgym"]`; in the v1 trainer, the stored
  `extra_fields`). `task_rows` / `write_task_parquet` make the dataset: one row per seed, its task id.
* **estimators as advantage estimators**: `register_estimators()` puts `creditgym_<name>` into verl's
  registry (`register_adv_est`). verl calls a registered function with the reward and mask tensors and
  the group ids only, which is enough for outcome estimators but not for those reading state keys, node
  ids or turn rewards (`gigpo`, `pvd`, `tree`, ...). For those, `compute_advantage(data, estimator)`
  reads the whole DataProto, and `creditgym_advantage()` (a context manager) / `install()` (for good,
  e.g. as Ray's `worker_process_setup_hook`) route verl's advantage step to it for `creditgym_*` names:
  they rebind the one module attribute each trainer looks its advantage function up by
  (`ray_trainer.compute_advantage`, v1's `compute_advantage_for_multi_trajectories`). A patch over a
  trainer subclass because verl builds its trainers inside a Ray actor from a config (no class to
  substitute without copying verl's entry point), and over a registry wrapper because the registry call
  never sees `non_tensor_batch`.

verl is imported inside the functions that use it, so this module imports without verl; the agent
loop class is built on first access (`CreditgymAgentLoop`, module `__getattr__`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np
import torch

from creditgym import CreditBatch, Episode, TaskSpec
from creditgym.agents import Collector, Context, Generation, Sampling
from creditgym.agents.base import cut_at_stop
from creditgym.credit import ESTIMATORS, compute
from creditgym.token_batch import dense_ids, prefix_node_ids

__all__ = [
    "AGENT_NAME", "PREFIX", "check_verl_compatible", "compute_advantage", "creditgym_advantage",
    "episode_output", "install", "register_estimators", "task_rows", "write_task_parquet",
]

AGENT_NAME = "creditgym_agent"
PREFIX = "creditgym_"
EXTRA = "creditgym"  # the extra field (and non-tensor column) holding the per-episode credit data
OWN_TRAINER = "creditgym's own trainer (creditgym.trainers.GRPOTrainer / PPOTrainer, `creditgym train`)"
INSTALL_HINT = "creditgym.integrations.verl needs verl: pip install verl==0.9.1 (the tested release)"
# estimators that read per-turn structure verl's registry call does not pass (state keys, node ids)
NEEDS_EXTRAS = frozenset({"gigpo", "pvd", "tree", "tree_grpo"})


def _verl() -> Any:
    try:
        import verl
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return verl


def check_verl_compatible(estimator: str) -> None:
    """Refuse estimators verl cannot feed: a creditgym critic, probes, branch or greedy rollouts."""
    if estimator not in ESTIMATORS:
        raise KeyError(f"unknown estimator {estimator!r}; registered: {sorted(ESTIMATORS)}")
    needs = dict(getattr(ESTIMATORS[estimator], "needs", {}))
    if needs.get("values") == "critic":
        raise ValueError(
            f"estimator {estimator!r} needs creditgym's turn-level critic, which verl's trainer does not train; use "
            f"{OWN_TRAINER}, or verl's own algorithm.adv_estimator=gae"
        )
    missing = [k for k in ("probe", "branches", "greedy", "values") if needs.get(k) and not needs.get("optional")]
    if missing:
        raise ValueError(f"estimator {estimator!r} needs {missing} from collection, which the verl agent loop does not run; use {OWN_TRAINER}")


# ----- the agent loop -----------------------------------------------------------------------------


def task_rows(env_id: str, seeds: Sequence[int], env_kwargs: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """verl dataset rows, one per seed: the task the env draws for the seed (replayed exactly by task id),
    `agent_name` selecting the creditgym agent loop, and the short chat prompt verl's dataset requires
    (unused: the Collector renders the env's own first observation). `env_kwargs` is stored as JSON
    (parquet cannot hold an empty struct)."""
    env = gymnasium.make(env_id, **dict(env_kwargs or {}))
    rows = []
    for i, s in enumerate(seeds):
        task_id = str(env.reset(seed=int(s))[1]["task_id"])
        rows.append({
            "data_source": env_id, "agent_name": AGENT_NAME,
            "prompt": [{"role": "user", "content": f"{env_id} task {task_id}"}],
            "reward_model": {"style": "rule", "ground_truth": ""},
            "extra_info": {"env_id": env_id, "env_kwargs": json.dumps(dict(env_kwargs or {})), "task_id": task_id, "seed": int(s), "index": i},
        })
    env.close()
    return rows


def write_task_parquet(path: str, env_id: str, seeds: Sequence[int], env_kwargs: Mapping[str, Any] | None = None) -> None:
    """`task_rows` as the parquet file verl's `data.train_files` reads."""
    import pandas as pd

    pd.DataFrame(task_rows(env_id, seeds, env_kwargs)).to_parquet(path)


def episode_output(ep: Episode, group: str, prompt_length: int, response_length: int) -> dict[str, Any]:
    """One episode in verl's agent-loop layout (the fields of `AgentLoopOutput`), cut to verl's lengths.

    Prompt: the first context. Response: every later token, each turn's observation (mask 0) then its
    action (its loss mask). `extra_fields["creditgym"]`: per turn the reward, state key and prefix node
    id, and per response token its turn (-1 on env tokens), so credit sees the env's own turns."""
    if ep.per_turn_rows:
        raise ValueError(f"episode {ep.episode_id} uses history {ep.history!r}; the verl agent loop needs history='full'")
    if not ep.turns:
        raise ValueError(f"episode {ep.episode_id} has no turn: the env ended at reset")
    prompt = list(ep.turns[0].obs_ids)
    if len(prompt) > prompt_length:
        raise ValueError(f"the env's first observation has {len(prompt)} tokens > rollout.prompt_length={prompt_length}; raise it")
    ids: list[int] = []
    mask: list[int] = []
    logp: list[float] = []
    turn: list[int] = []
    for k, t in enumerate(ep.turns):
        obs = t.obs_ids if k else ()
        ids += [*obs, *t.action_ids]
        mask += [0] * len(obs) + list(t.action_loss_mask or [1] * len(t.action_ids))
        logp += [0.0] * len(obs) + list(t.action_logprobs or [0.0] * len(t.action_ids))
        turn += [-1] * len(obs) + [k] * len(t.action_ids)
    kept = len({k for k in turn[:response_length] if k >= 0})  # turns with a token left after the cut
    turns = ep.turns[:kept]
    # pvd's abstract states (`CreditBatch.abstract_BK1`): each turn's, then the state after the last kept turn
    abstract = [t.info.get("abstract_state") for t in ep.turns]
    final = ep.meta.get("final_abstract_state") if kept == len(ep.turns) else abstract[kept]
    return {
        "prompt_ids": prompt, "response_ids": ids[:response_length], "response_mask": mask[:response_length],
        "response_logprobs": logp[:response_length], "reward_score": float(sum(t.reward for t in turns)),
        "num_turns": 1 + 2 * kept,
        "extra_fields": {EXTRA: {
            "group": group, "episode_id": ep.episode_id, "token_turn": turn[:response_length],
            "turn_rewards": [float(t.reward) for t in turns], "state_keys": [str(t.state_key) for t in turns],
            "node_ids": list(prefix_node_ids(f"{group}\x00{ep.role}", [t.action_ids for t in turns])),
            "truncated": bool(ep.truncated or kept < len(ep.turns)),
            "abstract_states": [None if a is None else str(a) for a in abstract[:kept]],
            "final_abstract_state": None if final is None else str(final),
        }},
    }


class ServerPolicy:
    """A creditgym Policy whose `generate` is verl's server manager. The Collector runs in a worker
    thread; each generation is scheduled on the agent loop's event loop and awaited from the thread."""

    def __init__(self, server_manager: Any, tokenizer: Any, loop: asyncio.AbstractEventLoop,
                 sampling_params: Mapping[str, Any], request_id: str, max_context: int):
        self.server_manager, self.tokenizer, self.loop = server_manager, tokenizer, loop
        self.sampling_params, self.request_id, self.max_context = dict(sampling_params), request_id, max_context
        self.has_logprobs = True
        self.generate_s = 0.0

    def generate(self, contexts: list[Context], sampling: Sampling) -> list[Generation]:
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=False)
        out = []
        for ctx in contexts:
            t0 = time.perf_counter()
            params = {**self.sampling_params, "max_tokens": sampling.max_new_tokens}
            call = self.server_manager.generate(request_id=self.request_id, prompt_ids=list(ctx.ids), sampling_params=params)
            token_out = asyncio.run_coroutine_threadsafe(call, self.loop).result()
            self.generate_s += time.perf_counter() - t0
            ids = [int(i) for i in token_out.token_ids]
            self.has_logprobs &= token_out.log_probs is not None
            cut, text = cut_at_stop(ids, sampling.stop, decode)
            lp = [float(x) for x in (token_out.log_probs or [0.0] * len(ids))[: len(cut)]]
            if not cut:  # an empty completion: keep one EOS so the turn has an action token
                cut, lp, text = [int(self.tokenizer.eos_token_id)], [0.0], ""
            out.append(Generation(tuple(cut), tuple(lp), text, "stop" if len(cut) < len(ids) else "length"))
        return out


_THREADS: list[concurrent.futures.ThreadPoolExecutor] = []


def _episode_threads() -> concurrent.futures.ThreadPoolExecutor:
    """The threads the episodes' Collectors run in. Each mostly waits on the server, so a worker's whole
    batch runs at once (asyncio's default executor would cap it at min(32, cpus + 4) episodes)."""
    if not _THREADS:
        _THREADS.append(concurrent.futures.ThreadPoolExecutor(max_workers=1024, thread_name_prefix="creditgym-episode"))
    return _THREADS[0]


async def run_episode(loop_self: Any, sampling_params: dict[str, Any], **kwargs: Any) -> Any:
    """`CreditgymAgentLoop.run`: one episode of the row's task, as verl's `AgentLoopOutput`."""
    from verl.experimental.agent_loop import AgentLoopOutput

    info = dict(kwargs.get("extra_info") or {})
    if "env_id" not in info:
        raise ValueError("a creditgym_agent row needs extra_info.env_id (and task_id, seed): build the dataset with task_rows()")
    rollout = loop_self.rollout_config
    group = str(kwargs.get("uid", info.get("index", 0)))
    policy = ServerPolicy(loop_self.server_manager, loop_self.tokenizer, asyncio.get_running_loop(), sampling_params,
                          uuid.uuid4().hex, int(rollout.prompt_length) + int(rollout.response_length))
    env_kwargs = info.get("env_kwargs") or {}
    collector = Collector(policy, info["env_id"], env_kwargs=json.loads(env_kwargs) if isinstance(env_kwargs, str) else dict(env_kwargs),
                          max_context_tokens=policy.max_context)
    task = TaskSpec(category="verl", task_id=str(info["task_id"]) if info.get("task_id") is not None else None)
    episodes = await asyncio.get_running_loop().run_in_executor(
        _episode_threads(), lambda: collector.collect(num_groups=1, seed=int(info.get("seed", 0)), tasks=[task]))
    ep = dataclasses.replace(episodes[0], group_id=group, node_ids=None)
    out = episode_output(ep, group, int(rollout.prompt_length), int(rollout.response_length))
    if not policy.has_logprobs:
        out["response_logprobs"] = None
    return AgentLoopOutput(**out, metrics={"generate_sequences": policy.generate_s})


def _build_agent_loop() -> type:
    _verl()
    from verl.experimental.agent_loop import AgentLoopBase

    class CreditgymAgentLoop(AgentLoopBase):
        """A creditgym env as a verl agent loop (module docstring). `__init__` keeps what `run` uses and
        skips AgentLoopBase's chat-template token builder: the Collector renders every token itself."""

        def __init__(self, trainer_config: Any, server_manager: Any, tokenizer: Any, **_: Any):
            self.config = trainer_config.config
            self.rollout_config = self.config.actor_rollout_ref.rollout
            self.server_manager, self.tokenizer = server_manager, tokenizer

        async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> Any:
            return await run_episode(self, sampling_params, **kwargs)

    CreditgymAgentLoop.__module__, CreditgymAgentLoop.__qualname__ = __name__, "CreditgymAgentLoop"
    return CreditgymAgentLoop


_LAZY: dict[str, Any] = {}


def __getattr__(name: str) -> Any:  # PEP 562: hydra's `_target_` and imports resolve the class on first use
    if name == "CreditgymAgentLoop":
        if name not in _LAZY:
            _LAZY[name] = _build_agent_loop()
        return _LAZY[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_agent_loop() -> None:
    """Register `CreditgymAgentLoop` as agent `creditgym_agent` in verl's agent-loop registry."""
    _verl()
    from verl.experimental.agent_loop.agent_loop import register

    register(AGENT_NAME)(__getattr__("CreditgymAgentLoop"))


# ----- the advantage step -------------------------------------------------------------------------


def _row_extras(non_tensor_batch: Mapping[str, Any], B: int) -> list[dict[str, Any]] | None:
    """Each row's `extra_fields["creditgym"]`: a column of its own (agent loop v0 batches) or inside the
    `extra_fields` dicts (v1's stored fields); None when no row has one."""
    if EXTRA in non_tensor_batch:
        rows = list(non_tensor_batch[EXTRA])
    elif "extra_fields" in non_tensor_batch:
        rows = [(ef or {}).get(EXTRA) if isinstance(ef, Mapping) else None for ef in non_tensor_batch["extra_fields"]]
    else:
        return None
    if all(r is None for r in rows):
        return None
    if any(r is None for r in rows) or len(rows) != B:
        raise ValueError("some rows of the batch were not rolled out by the creditgym_agent loop; give every row of a "
                         "batch the same agent (agent_name) when a creditgym estimator reads the env's turns")
    return rows


def batch_from_dataproto(data: Any, estimator: str = "") -> CreditBatch:
    """A CreditBatch from verl's DataProto (response layout: right padding, `response_mask`, `uid`).

    With the agent loop's extras the turns, turn rewards, state keys and node ids are the env's own;
    without them, turns are runs of `response_mask` and rewards `token_level_rewards`."""
    batch, nt = data.batch, data.non_tensor_batch
    mask_BT = batch["response_mask"]
    B, T = mask_BT.shape
    if "uid" not in nt:
        raise ValueError("the batch has no non_tensor_batch['uid'] (verl's group id per row); verl's trainer sets it")
    extras = _row_extras(nt, B)
    kw: dict[str, Any] = {}
    if extras is not None:
        K = max(1, max(len(e["turn_rewards"]) for e in extras))
        rewards_BK, turn_BT = torch.zeros(B, K), torch.full((B, T), -1, dtype=torch.long)
        for b, e in enumerate(extras):
            rewards_BK[b, : len(e["turn_rewards"])] = torch.tensor(e["turn_rewards"], dtype=torch.float32)
            turn_BT[b, : min(T, len(e["token_turn"]))] = torch.tensor(e["token_turn"][:T], dtype=torch.long)
        truncated_B = torch.tensor([bool(e["truncated"]) for e in extras])
        kw.update(rewards_BK=rewards_BK, token_turn_BT=turn_BT, state_keys=[e["state_keys"] for e in extras],
                  node_ids=[e["node_ids"] for e in extras], truncated_B=truncated_B,
                  abstract_BK1=_abstract_ids(extras, truncated_B))
    elif estimator in NEEDS_EXTRAS:
        raise ValueError(
            f"estimator {estimator!r} reads the env's state keys / prefix nodes per turn, which this batch lacks: roll out "
            f"with the {AGENT_NAME} agent loop (creditgym.integrations.verl) and route verl's advantage step to creditgym "
            "(`creditgym_advantage()` or `install()`; docs/scale.md, verl)"
        )
    else:
        kw["rewards_BT"] = batch["token_level_rewards"]
    if "responses" in batch.keys():
        kw["ids_BT"] = batch["responses"]
    if "attention_mask" in batch.keys():  # prompt + response columns: the response's are the last T
        kw["attention_mask_BT"] = batch["attention_mask"][:, -T:]
    return CreditBatch.from_token_tensors(mask_BT, [str(u) for u in nt["uid"]], **kw)


def _abstract_ids(extras: Sequence[Mapping[str, Any]], truncated_B: torch.Tensor) -> torch.Tensor | None:
    """`abstract_BK1` as `CreditBatch.from_episodes` packs it: dense ids of each turn's abstract state (its
    state key when it has none), the final state at column n_b, -1 elsewhere; None when no turn has one."""
    if not any(a is not None for e in extras for a in e.get("abstract_states", ())):
        return None
    n_B = [len(e["turn_rewards"]) for e in extras]
    K = max(1, max(n + int(t) for n, t in zip(n_B, truncated_B.tolist())))
    out = torch.full((len(extras), K + 1), -1, dtype=torch.long)
    lookup: dict[str, int] = {}
    for b, e in enumerate(extras):
        keys = [a if a is not None else f"state_key:{k}" for a, k in zip(e["abstract_states"], e["state_keys"])]
        out[b, : n_B[b]] = torch.tensor(dense_ids(keys, lookup), dtype=torch.long)
        if e.get("final_abstract_state") is not None:
            out[b, n_B[b]] = lookup.setdefault(e["final_abstract_state"], len(lookup))
    return out


def compute_advantage(data: Any, estimator: str, **estimator_cfg: Any) -> Any:
    """verl's advantage step with a creditgym estimator: `data.batch["advantages"]` and `["returns"]`
    (the same tensor, as verl's critic-free estimators do), `(B, response_length)`, 0 off the response mask."""
    check_verl_compatible(estimator)
    cb = batch_from_dataproto(data, estimator)
    mask_BT = data.batch["response_mask"]
    adv_BT = cb.to_token_tensors(compute(estimator, cb, **estimator_cfg).token_BT)
    adv_BT = (adv_BT.to(mask_BT.device) * mask_BT).float()
    data.batch["advantages"], data.batch["returns"] = adv_BT, adv_BT.clone()
    return data


def estimator_cfg(config: Any) -> dict[str, Any]:
    """The estimator's knobs: `algorithm.creditgym` in verl's config (`+algorithm.creditgym.omega=1.0`)."""
    raw = None if config is None else (config.get("creditgym", None) if hasattr(config, "get") else getattr(config, "creditgym", None))
    if raw is None:
        return {}
    from omegaconf import OmegaConf

    return dict(OmegaConf.to_container(raw, resolve=True) if OmegaConf.is_config(raw) else raw)  # type: ignore[arg-type]


def creditgym_name(adv_estimator: Any) -> str | None:
    """`gigpo` for verl's `algorithm.adv_estimator=creditgym_gigpo`; None for verl's own estimators."""
    name = str(getattr(adv_estimator, "value", adv_estimator))
    return name[len(PREFIX) :] if name.startswith(PREFIX) else None


_REGISTRY_FNS: dict[str, Callable[..., Any]] = {}


def _registry_fn(estimator: str) -> Callable[..., Any]:
    def creditgym_estimator(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index: Any = None,
                            config: Any = None, **_: Any) -> tuple[torch.Tensor, torch.Tensor]:
        from verl.protocol import DataProto

        if index is None:
            raise ValueError(f"{PREFIX}{estimator} needs group ids; verl passes them as `index` from non_tensor_batch['uid']")
        uid = np.empty(len(index), dtype=object)
        uid[:] = list(index)
        data = DataProto.from_dict(tensors={"token_level_rewards": token_level_rewards, "response_mask": response_mask},
                                   non_tensors={"uid": uid})
        data = compute_advantage(data, estimator, **estimator_cfg(config))
        return data.batch["advantages"], data.batch["returns"]

    creditgym_estimator.__name__ = creditgym_estimator.__qualname__ = f"{PREFIX}{estimator}"
    return creditgym_estimator


def register_estimators(names: Sequence[str] | None = None) -> list[str]:
    """Register `creditgym_<name>` in verl's advantage-estimator registry (`register_adv_est`) for each
    estimator verl can feed (default: all of them); returns the registered names. Idempotent."""
    _verl()
    from verl.trainer.ppo.core_algos import register_adv_est

    out = []
    for name in sorted(ESTIMATORS) if names is None else names:
        try:
            check_verl_compatible(name)
        except ValueError:
            if names is None:
                continue
            raise
        register_adv_est(PREFIX + name)(_REGISTRY_FNS.setdefault(name, _registry_fn(name)))
        out.append(PREFIX + name)
    return out


def route_v0(original: Callable[..., Any]) -> Callable[..., Any]:
    """verl's `ray_trainer.compute_advantage`, with `creditgym_*` estimators computed on the whole DataProto."""

    def compute_advantage_routed(data: Any, adv_estimator: Any, *args: Any, config: Any = None, **kwargs: Any) -> Any:
        name = creditgym_name(adv_estimator)
        if name is None:
            return original(data, adv_estimator, *args, config=config, **kwargs)
        return compute_advantage(data, name, **estimator_cfg(config))

    compute_advantage_routed.__wrapped__ = original  # type: ignore[attr-defined]
    return compute_advantage_routed


def fetch_v1_extras(batch_keys: Sequence[str]) -> list[Any]:
    """The stored `extra_fields` of the v1 trainer's rows (TransferQueue; the trainer reads only tensors)."""
    import transfer_queue as tq

    got = tq.kv_batch_get(keys=list(batch_keys), partition_id="train", select_fields=["extra_fields"])
    return list(got["extra_fields"].tolist())


def route_v1(original: Callable[..., Any], fetch: Callable[[Sequence[str]], list[Any]] = fetch_v1_extras) -> Callable[..., Any]:
    """v1's `compute_advantage_for_multi_trajectories`, with `creditgym_*` estimators computed on the batch
    plus each row's stored `extra_fields` (fetched by key, as the v1 trainer stores one row per key)."""

    def advantage_routed(data: Any, batch_keys: Sequence[str], adv_estimator: Any, *args: Any, config: Any = None,
                         **kwargs: Any) -> Any:
        name = creditgym_name(adv_estimator)
        if name is None:
            return original(data, batch_keys, adv_estimator, *args, config=config, **kwargs)
        if EXTRA not in data.non_tensor_batch:
            extra_fields = np.empty(len(batch_keys), dtype=object)
            extra_fields[:] = fetch(batch_keys)
            data.non_tensor_batch["extra_fields"] = extra_fields
        return compute_advantage(data, name, **estimator_cfg(config))

    advantage_routed.__wrapped__ = original  # type: ignore[attr-defined]
    return advantage_routed


# (module, attribute, wrapper): where each verl trainer looks its advantage function up
_ROUTES: tuple[tuple[str, str, Callable[..., Any]], ...] = (
    ("verl.trainer.ppo.ray_trainer", "compute_advantage", route_v0),
    ("verl.trainer.ppo.v1.trainer_base", "compute_advantage_for_multi_trajectories", route_v1),
)


def _patch() -> list[tuple[Any, str, Any]]:
    import importlib

    _verl()
    saved = []
    for module_name, attr, wrap in _ROUTES:
        module = importlib.import_module(module_name)
        original = getattr(module, attr)
        if getattr(original, "__wrapped__", None) is None:  # not routed yet
            setattr(module, attr, wrap(original))
            saved.append((module, attr, original))
    return saved


@contextlib.contextmanager
def creditgym_advantage() -> Iterator[None]:
    """Inside: verl's trainers compute `algorithm.adv_estimator=creditgym_<name>` with creditgym on the
    whole batch (state keys, node ids, turn rewards included); outside, verl's code is as it was."""
    register_estimators()
    saved = _patch()
    try:
        yield
    finally:
        for module, attr, original in reversed(saved):
            setattr(module, attr, original)


def install() -> None:
    """For good, in this process: the estimators, the agent loop and the advantage route. Give it to Ray
    as `worker_process_setup_hook` (a Hydra override, docs/scale.md) so the trainer's actor has it."""
    register_estimators()
    register_agent_loop()
    _patch()
