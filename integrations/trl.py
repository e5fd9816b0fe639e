"""creditgym envs and credit inside TRL's GRPOTrainer (pinned: `pip install 'creditgym[trl]'`).

    from creditgym.integrations.trl import CreditGRPOTrainer, task_dataset
    trainer = CreditGRPOTrainer(model, "creditgym/SearchEasy-v0", args=GRPOConfig(...),
                                estimator="gigpo", processing_class=tokenizer)
    trainer.train()                       # or `accelerate launch` a script that does this (docs/scale.md)

What the subclass changes in TRL 1.16 (everything else, the loss, the optimiser, accelerate's DDP,
DeepSpeed ZeRO and FSDP, vLLM, is TRL's own):

* `rollout_func` (experimental in TRL): each dataset row is one creditgym episode of the row's task,
  played multi-turn by the Collector through TRL's generation backend (`_generate_single_turn`: vLLM
  server or colocated when `use_vllm`, else `model.generate`), token in, token out. It returns the
  exact prompt ids (the first context), completion ids (every later token: actions and the env's
  replies), the sampling logprobs (vLLM only; the HF path records none, as in TRL) and `env_mask`
  (1 on sampled tokens the loss trains, 0 on env tokens).
* the advantage: TRL computes one scalar per sequence inside `_generate_and_score_completions` (no
  public hook); this subclass replaces it with the creditgym estimator's per-token advantages `(B, T)`
  on the completion layout, computed over the whole generation batch of every process
  (`CreditBatch.from_token_tensors`, then `credit.compute`), so groups split across processes keep one
  baseline. TRL's reward (the episode return) is still computed and logged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium
import torch

from creditgym import CreditBatch, Episode, TaskSpec
from creditgym.agents import Collector, Context, Generation, Sampling
from creditgym.agents.base import cut_at_stop
from creditgym.credit import ESTIMATORS, compute

try:
    import datasets
    from accelerate.utils import gather_object
    from trl import GRPOConfig, GRPOTrainer
except ImportError as e:  # pragma: no cover - the extra is missing
    raise ImportError(
        "creditgym.integrations.trl needs TRL: pip install 'creditgym[trl]' (pins the tested TRL release)"
    ) from e

__all__ = ["CreditGRPOTrainer", "TRLGenerator", "check_trl_compatible", "cut_at_stop", "episode_rollout", "task_dataset"]

OWN_TRAINER = "creditgym's own trainer (creditgym.trainers.GRPOTrainer / PPOTrainer, `creditgym train`)"


def task_dataset(env_id: str, seeds: Sequence[int], env_kwargs: Mapping[str, Any] | None = None) -> datasets.Dataset:
    """One row per seed: the task the env draws for it (`task_id`, replayed exactly through
    `reset(options={"task_id": ...})`), its index, and a short text prompt TRL requires (unused: the
    Collector renders the env's own first observation)."""
    env = gymnasium.make(env_id, **dict(env_kwargs or {}))
    task_ids = [str(env.reset(seed=int(s))[1]["task_id"]) for s in seeds]
    env.close()
    return datasets.Dataset.from_dict(
        {"prompt": [f"{env_id} task {t}" for t in task_ids], "task_id": task_ids, "task_index": list(range(len(task_ids)))}
    )


def check_trl_compatible(estimator: str, args: GRPOConfig) -> None:
    """Refuse what TRL cannot run: estimators needing a critic or collection TRL's rollout does not do
    (probes, branches, greedy baselines), and TRL options that assume one advantage per sequence."""
    if estimator not in ESTIMATORS:
        raise KeyError(f"unknown estimator {estimator!r}; registered: {sorted(ESTIMATORS)}")
    needs = dict(getattr(ESTIMATORS[estimator], "needs", {}))
    if needs.get("values") == "critic":
        raise ValueError(f"estimator {estimator!r} needs a critic, which TRL's GRPOTrainer has none of; use {OWN_TRAINER}")
    missing = [k for k in ("probe", "branches", "greedy", "values") if needs.get(k) and not needs.get("optional")]
    if missing:
        raise ValueError(
            f"estimator {estimator!r} needs {missing} from collection, which the TRL rollout does not run; use {OWN_TRAINER}"
        )
    per_sequence = {
        "use_liger_kernel": args.use_liger_kernel,  # Liger's fused GRPO loss takes advantages of shape (B,)
        "importance_sampling_level='sequence'": args.importance_sampling_level == "sequence",  # GSPO
        "loss_type='vespo'": args.loss_type == "vespo",  # weights by the sign of one sequence advantage
        "off_policy_mask_threshold": args.off_policy_mask_threshold is not None,  # masks by sequence advantage sign
    }
    bad = [k for k, on in per_sequence.items() if on]
    if bad:
        raise ValueError(
            f"TRL options {bad} assume one advantage per sequence; creditgym gives one per token. Turn them off, "
            f"or use {OWN_TRAINER}"
        )


class TRLGenerator:
    """A creditgym Policy whose `generate` is TRL's generation backend (vLLM or `model.generate`).

    With several processes every call is collective (vLLM server gathers prompts; DeepSpeed ZeRO-3 and
    FSDP gather weights), so each call starts with a gather of "still generating" flags and `drain()`
    keeps a finished process generating a dummy prompt until every process is done.
    """

    def __init__(self, trainer: GRPOTrainer):
        self.trainer = trainer
        self.tokenizer = trainer.processing_class
        self.max_context = getattr(trainer.model.config, "max_position_embeddings", None)
        self.has_logprobs = bool(trainer.use_vllm)

    def _anyone_generating(self, me: bool) -> bool:
        acc = self.trainer.accelerator
        if acc.num_processes == 1:
            return me
        return bool(acc.gather(torch.tensor([int(me)], device=acc.device)).any())

    def _backend(self, prompt_ids: list[list[int]]) -> tuple[list[list[int]], list[list[float]] | None]:
        completion_ids, logprobs = self.trainer._generate_single_turn(prompt_ids, None, {}, 1)
        return [list(map(int, c)) for c in completion_ids], logprobs

    def generate(self, contexts: list[Context], sampling: Sampling) -> list[Generation]:
        self._anyone_generating(True)
        completion_ids, logprobs = self._backend([list(c.ids) for c in contexts])
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=False)
        out = []
        for i, ids in enumerate(completion_ids):
            cut, text = cut_at_stop(ids, sampling.stop, decode)
            lp = [float(x) for x in logprobs[i][: len(cut)]] if logprobs is not None else [0.0] * len(cut)
            if not cut:  # an empty completion: keep one EOS so the turn has an action token
                cut, lp, text = [int(self.trainer.eos_token_ids[0])], [0.0], ""
            out.append(Generation(tuple(cut), tuple(lp), text, "stop" if len(cut) < len(ids) else "length"))
        return out

    def drain(self) -> None:
        while self._anyone_generating(False):
            self._backend([[int(self.trainer.eos_token_ids[0])]])


def episode_rollout(ep: Episode) -> dict[str, Any]:
    """One episode in TRL's rollout layout: prompt = the first context; completion = every later token."""
    if ep.per_turn_rows:
        raise ValueError(f"episode {ep.episode_id} uses history {ep.history!r}; the TRL rollout needs history='full'")
    if not ep.turns:
        raise ValueError(f"episode {ep.episode_id} has no turn: the env ended at reset")
    out: dict[str, list[Any]] = {"completion_ids": [], "env_mask": [], "logprobs": [], "token_turn": []}
    for k, t in enumerate(ep.turns):
        obs = t.obs_ids if k else ()  # the first turn's observation tokens are the prompt
        out["completion_ids"] += [*obs, *t.action_ids]
        out["env_mask"] += [0] * len(obs) + list(t.action_loss_mask or ())
        out["logprobs"] += [0.0] * len(obs) + list(t.action_logprobs or ())
        out["token_turn"] += [-1] * len(obs) + [k] * len(t.action_ids)
    return {"prompt_ids": list(ep.turns[0].obs_ids), **out}


class CreditGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer on a creditgym env, optimising a creditgym estimator's per-token advantages.

    Args:
        model, args, processing_class, and any other GRPOTrainer keyword: passed to TRL.
        env_id / env_kwargs: the creditgym env every episode plays (single-agent envs).
        estimator / estimator_cfg: a name in `creditgym.credit.ESTIMATORS` and its knobs (checked).
        train_dataset: rows with `task_id` and `task_index`; default `task_dataset(env_id, range(64))`.
    """

    def __init__(
        self,
        model: Any,
        env_id: str,
        args: GRPOConfig,
        estimator: str = "gigpo",
        estimator_cfg: Mapping[str, Any] | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
        train_dataset: datasets.Dataset | None = None,
        **trl_kwargs: Any,
    ):
        check_trl_compatible(estimator, args)
        self.env_id, self.estimator, self.estimator_cfg = env_id, estimator, dict(estimator_cfg or {})
        self.env_kwargs = dict(env_kwargs or {})
        if train_dataset is None:
            train_dataset = task_dataset(env_id, range(64), self.env_kwargs)
        super().__init__(model=model, reward_funcs=[_episode_return], args=args, train_dataset=train_dataset,
                         rollout_func=self._rollout, **trl_kwargs)
        self.generator = TRLGenerator(self)
        self.collector = Collector(self.generator, env_id, env_kwargs=self.env_kwargs)
        self.outcome_key = getattr(ESTIMATORS[estimator], "needs", {}).get("outcome_key")
        self.last_episodes: list[Episode] = []  # this process's episodes of the last generation batch
        self.last_advantages: torch.Tensor | None = None  # what the loss optimises: (B_local, T_completion)
        self._rows: list[dict[str, Any]] = []
        self._calls = 0

    def _rollout(self, prompts: list[Any], trainer: GRPOTrainer) -> dict[str, Any]:
        rows, call = self._rows, self._calls
        self._calls += 1
        tasks = [TaskSpec(category="trl", task_id=str(r["task_id"])) for r in rows]
        episodes = self.collector.collect(num_groups=len(rows), seed=call, tasks=tasks)
        self.generator.drain()
        # one group per dataset row of this call: the num_generations copies of a row share it
        episodes = [dataclasses.replace(ep, group_id=f"c{call}-t{r['task_index']}", node_ids=None) for ep, r in zip(episodes, rows)]
        self.last_episodes = episodes
        out = [episode_rollout(ep) for ep in episodes]
        return {
            "prompt_ids": [o["prompt_ids"] for o in out],
            "completion_ids": [o["completion_ids"] for o in out],
            "logprobs": [o["logprobs"] for o in out] if self.generator.has_logprobs else None,
            "env_mask": [o["env_mask"] for o in out],
            "creditgym_return": [_outcome(ep, self.outcome_key) for ep in episodes],
        }

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self._rows = inputs
        output = super()._generate_and_score_completions(inputs)
        adv_BT = self.credit_advantages(self.last_episodes)
        B, C = output["completion_ids"].shape
        adv = torch.zeros(B, C, dtype=torch.float32)
        w = min(C, adv_BT.shape[1])
        adv[:, :w] = adv_BT[:, :w]
        self.last_advantages = adv.to(output["completion_ids"].device)
        output["advantages"] = self.last_advantages
        return output

    def credit_advantages(self, episodes: Sequence[Episode]) -> torch.Tensor:
        """This process's `(B_local, T)` per-token advantages on the completion layout, computed over the
        generation batch of every process (groups may span processes)."""
        local = [(ep.group_id, episode_rollout(ep), [t.reward for t in ep.turns], [t.state_key for t in ep.turns],
                  ep.truncated, _outcome(ep, self.outcome_key)) for ep in episodes]
        everyone = gather_object(local) if self.accelerator.num_processes > 1 else local
        B, T = len(everyone), max(1, max(len(r[1]["completion_ids"]) for r in everyone))
        ids, loss, turn = torch.zeros(B, T, dtype=torch.long), torch.zeros(B, T, dtype=torch.long), torch.full((B, T), -1)
        K = max(len(r[2]) for r in everyone)
        rewards = torch.zeros(B, K)
        for b, (_, ro, rew, _, _, _) in enumerate(everyone):
            n = len(ro["completion_ids"])
            ids[b, :n], loss[b, :n], turn[b, :n] = (torch.tensor(ro[k]) for k in ("completion_ids", "env_mask", "token_turn"))
            rewards[b, : len(rew)] = torch.tensor(rew)
        attn = (torch.arange(T)[None, :] < torch.tensor([len(r[1]["completion_ids"]) for r in everyone])[:, None]).long()
        batch = CreditBatch.from_token_tensors(
            loss, [r[0] for r in everyone], rewards_BK=rewards, ids_BT=ids, attention_mask_BT=attn, token_turn_BT=turn,
            truncated_B=torch.tensor([r[4] for r in everyone]), state_keys=[r[3] for r in everyone],
            outcome_B=torch.tensor([r[5] for r in everyone]), outcome_key=self.outcome_key,
        )
        adv_BT = batch.to_token_tensors(compute(self.estimator, batch, **self.estimator_cfg).token_BT)
        start = self.accelerator.process_index * len(episodes)
        return adv_BT[start : start + len(episodes)]


def _outcome(ep: Episode, key: str | None) -> float:
    return float(ep.outcome[key]) if key is not None else ep.total_reward


def _episode_return(completions: list[Any], creditgym_return: list[float], **_: Any) -> list[float]:
    """TRL's reward: the episode's outcome (logged by TRL; the advantage comes from creditgym)."""
    return [float(r) for r in creditgym_return]
