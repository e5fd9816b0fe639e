"""The rollout Collector: many episodes at once, exact token bookkeeping (ARCHITECTURE.md, "Policies").

`Collector(policy, env_id, group_size=G).collect(num_groups, seed)` plays `num_groups * G` episodes
over a pool of envs, batching generation across every episode still active (episodes end at
different turns). Episodes of a group share task and seed (GRPO groups, arXiv 2402.03300). Token
ids are token-in, token-out: `Turn.obs_ids` are exactly the tokens appended before each action (the
chat-template delta, `rollout_chat.py`) and `Turn.action_ids` exactly what the policy sampled, so
the packed rows (`ids_RT`) of `CreditBatch.from_episodes` are what the policy saw and sampled. The
history policy (`rollout_history.py`) picks each turn's prompt: the growing conversation (`full`) or
a fresh per-turn prompt (`window`, a function), and the token budget defaults to the policy's own
context length. See docs/collector.md for the full list of duties (roles, stop strings, responders,
self-play, greedy baselines, branching, probes, timing, backend failures).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np

from creditgym.agents.base import Context, Generation, Sampling
from creditgym.agents.env_workers import EnvFailure, EnvHandle, ResetResult, StepResult
from creditgym.agents.probes import apply_probes
from creditgym.agents.rollout_chat import ChatRenderer, char_mask_to_token_mask
from creditgym.agents.rollout_envs import EnvPool
from creditgym.agents.rollout_history import (
    HistoryPolicy,
    parse_history,
    prompt_too_long,
    report_truncation,
    resolve_max_context,
)
from creditgym.agents.rollout_state import (
    Match,
    RoleConv,
    StartSpec,
    append_assistant,
    build_episodes,
    played_conv,
    prefix_conv,
)
from creditgym.store import RolloutStore
from creditgym.token_batch import prefix_node_ids
from creditgym.trajectory import Episode, TaskSpec

__all__ = ["Collector", "derive_seed"]

log = logging.getLogger(__name__)

EnvFn = Callable[[], gymnasium.Env]

MATCH_STEP = "match_step"
"""`Turn.info` key of two-player envs: the turn's index among all moves of its match (both roles)."""


def derive_seed(*parts: int) -> int:
    """A 31-bit seed from integers (numpy SeedSequence: stable across processes and platforms)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


class Collector:
    """Runs episodes of `policy` (or `policies` per role) on `env_id` (or `env_fns`), in groups.

    Args:
        policy: a Policy (generate + tokenizer); plays every role unless `policies` names one.
        env_id: a registered env id; or `env_fns` (one constructor per concurrent env slot), which
            may also be passed in env_id's place.
        group_size: episodes per group (same task and seed).
        env_kwargs: constructor kwargs for `gymnasium.make(env_id, **env_kwargs)`.
        policies: `{"attacker": p1, "defender": p2}` for two-player envs (`info["role"]` says who acts).
        responder_policy: answers `metadata["requires_responder"]` envs (default: `policy`).
        greedy_baseline: one extra greedy rollout per group; its return goes to each episode's
            `meta["greedy_return"]` (ReMax, arXiv 2310.10505) and it is not returned.
        probes: e.g. `[GoldAnswerProbe()]`; fill `Episode.probe0` / `Turn.probe` (CREDIT.md 1.1).
        sampling: decoding settings; each env's `metadata["stop"]` is merged into `stop`.
        max_context_tokens: the token budget of one context. None: the context length the policy
            declares (`policy.max_context`, else `model.config.max_position_embeddings`), else
            `rollout_history.DEFAULT_MAX_CONTEXT_TOKENS`. With the `full` history an episode whose
            context has no room for another token ends truncated with outcome `{"success": 0,
            "return": ..., "collector_truncated": 1}` (and a warning); a per-turn prompt that does not
            fit raises.
        history: what the policy sees each turn: "full", "window" / "window:k" /
            `{"mode": "window", "k": k}`, or `fn(obs_texts, action_texts) -> list[message]`
            (docs/collector.md, "History"). None: each env's `metadata["history"]` (default "full").
        store: a RolloutStore (or path) each finished group is appended to.
        progress: show a rich progress bar.
        max_concurrent: cap on envs running at once (None: every episode of the call at once).
        system_prompt: an optional system message before the first observation.
        prefill: text that starts every reply (SEMA's `"1. "`, METHODS.md section 8): its tokens
            (`tokenizer.encode(prefill, add_special_tokens=False)`) are appended to the context, the
            policy continues them, and the turn records `action_ids = prefill ids + generated ids`,
            `action_text = prefill + generated text`. The prefill tokens were not sampled: their
            `action_logprobs` are 0.0 (probability 1 under the sampling process), their
            `action_loss_mask` is 0 (the RL loss skips them) and `Turn.info["prefill_tokens"]` counts
            them (SFT on self-generated data unmasks them: `trainers.sema.train_on_prefill`).
        workers: env workers that reset and step the envs (`agents/env_workers.py`): 0 (the default)
            steps every env in this process, one after the other; N > 0 steps them in N workers of
            `worker_backend`, so env latency (sandbox runs, retrievers) overlaps. Generation stays
            batched here. Episodes are the same as with 0 (apart from timings).
        worker_backend: "thread", "process" (spawned processes; envs built there) or "ray" (Ray
            actors, `pip install 'creditgym[ray]'`). A crashed env or worker is rebuilt and the episode
            replayed; where replay cannot restore it the episode ends truncated with
            `outcome["env_error"] = 1` (excluded from training), counted in `stats["env_errors"]`.
    """

    def __init__(
        self,
        policy: Any = None,
        env_id: str | Sequence[EnvFn] | None = None,
        group_size: int = 1,
        env_kwargs: Mapping[str, Any] | None = None,
        policies: Mapping[str, Any] | None = None,
        responder_policy: Any = None,
        greedy_baseline: bool = False,
        probes: Sequence[Any] = (),
        sampling: Sampling | None = None,
        max_context_tokens: int | None = None,
        store: RolloutStore | str | None = None,
        progress: bool = False,
        env_fns: Sequence[EnvFn] | None = None,
        max_concurrent: int | None = None,
        system_prompt: str | None = None,
        history: Any = None,
        prefill: str | None = None,
        workers: int = 0,
        worker_backend: str = "thread",
    ):
        if env_id is not None and not isinstance(env_id, str):  # Collector(policy, [fn, fn, ...])
            env_fns, env_id = list(env_id), None
        if policy is None and not policies:
            raise ValueError("Collector needs a policy (or policies={'attacker': p1, 'defender': p2})")
        if (env_id is None) == (env_fns is None):
            raise ValueError("Collector needs exactly one of env_id (a registered id) or env_fns (env constructors)")
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        self.history: HistoryPolicy | None = parse_history(history) if history is not None else None
        self.policy = policy if policy is not None else next(iter(policies.values()))  # type: ignore[union-attr]
        self.policies = dict(policies or {})
        self.responder_policy = responder_policy
        self.env_id = env_id or ""
        self.env_fns = list(env_fns) if env_fns is not None else None
        self.group_size = int(group_size)
        self.env_kwargs = dict(env_kwargs or {})
        self.greedy_baseline = bool(greedy_baseline)
        self.probes = list(probes)
        self.sampling = sampling if sampling is not None else Sampling()
        self.max_context_tokens = resolve_max_context(
            max_context_tokens, [self.policy, *self.policies.values()]
        )
        if self.max_context_tokens < 2:
            raise ValueError(f"max_context_tokens must be >= 2, got {self.max_context_tokens}")
        self.store = RolloutStore(store) if isinstance(store, str) else store
        self.progress = bool(progress)
        self.max_concurrent = max_concurrent
        self.system_prompt = system_prompt
        self.prefill = prefill or ""
        self._prefill_ids: dict[int, list[int]] = {}
        self._run_id = uuid.uuid4().hex[:8]
        self._calls = 0
        self._gen_calls = 0
        self.pool = EnvPool(env_id, env_fns, self.env_kwargs, max_concurrent, self._responder, workers, worker_backend)
        self._renderers: dict[int, ChatRenderer] = {}
        self._base_seed = 0
        self.stats: dict[str, float] = {}

    # ------------------------------------------------------------------ public API
    def policy_for(self, role: str) -> Any:
        return self.policies.get(role, self.policy) if self.policies else self.policy

    def set_env_attr(self, name: str, value: Any) -> None:
        """Set `env.unwrapped.<name> = value` on every env, now and for envs created later (trainer
        state such as SimSearch's `training_step`)."""
        self.pool.set_attr(name, value)

    def state_dict(self) -> dict[str, int]:
        """The counters that make the next `collect` unique and seeded: its call and generation counts
        (a trainer checkpoints them, so a resumed run gets the same group ids and sampling seeds)."""
        return {"calls": self._calls, "gen_calls": self._gen_calls}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self._calls, self._gen_calls = int(state["calls"]), int(state["gen_calls"])

    def collect(
        self, num_groups: int, seed: int = 0, tasks: Sequence[TaskSpec] | None = None,
        group_policies: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[Episode]:
        """Play `num_groups` groups of `group_size` episodes; group g resets every member with the
        same derived seed (and `options={"task_id": ...}` when `tasks[g]` names one). `group_policies[g]`
        (role -> policy) overrides `policies` for group g's matches (a self-play opponent drawn per group)."""
        if tasks is not None and len(tasks) != num_groups:
            raise ValueError(f"collect: got {len(tasks)} tasks for {num_groups} groups; give one TaskSpec per group")
        if group_policies is not None and len(group_policies) != num_groups:
            raise ValueError(f"collect: got {len(group_policies)} group_policies for {num_groups} groups; give one per group")
        call = self._calls
        self._calls += 1
        self._base_seed = int(seed)
        specs: list[StartSpec] = []
        for g in range(num_groups):
            task = tasks[g] if tasks is not None else None
            kwargs = dict(task.env_kwargs) if task is not None else {}
            options: dict[str, Any] = {"task_id": task.task_id} if task is not None and task.task_id else {}
            group_id = f"{self._run_id}-c{call}-g{g}"
            gseed = derive_seed(seed, g)
            meta = {"options": options, "env_kwargs": kwargs, "category": task.category if task else None}
            for m in range(self.group_size + (1 if self.greedy_baseline else 0)):
                greedy = m == self.group_size
                override = dict(group_policies[g] or {}) if group_policies is not None else None
                specs.append(StartSpec(bucket=g, group_id=group_id, member=m, seed=gseed, options=options,
                                       env_kwargs=kwargs, greedy=greedy, meta=dict(meta), policies=override or None))
        return self._run(specs)

    def branch(
        self, episodes: Sequence[Episode], at_turns: Sequence[int] | Sequence[Sequence[int]] | str | None, n: int
    ) -> list[Episode]:
        """Fork each episode `n` ways before each turn k in `at_turns` ("all"/None: every turn; a list of
        ints for every episode; or one list per episode): replay the env to the state before turn k,
        reuse the recorded prefix tokens exactly, and sample on. Branches share `group_id`, and their
        `node_ids` agree with the originals' on the shared prefix (CREDIT.md 6.1). Two-player matches
        branch too: `episodes` must then hold both roles' episodes of each match (`meta["match_id"]`);
        the replay interleaves their actions in the recorded order, and each branch returns both
        roles' episodes of the new match."""
        if n < 1:
            return []
        specs: list[StartSpec] = []
        two_player = bool(self.policies) and len(self.policies) > 1
        by_match: dict[tuple[str, str], Episode] = {(str(e.meta.get("match_id")), e.role): e for e in episodes}
        for i, ep in enumerate(episodes):
            partner = None
            if two_player:
                others = [e for (mid, role), e in by_match.items() if mid == ep.meta.get("match_id") and role != ep.role]
                interleaved = any(int(t.info.get(MATCH_STEP, j)) != j for j, t in enumerate(ep.turns))
                if not others and interleaved:
                    raise ValueError(f"branch: two-player episode {ep.episode_id} ({ep.role}) needs the other role's "
                                     "episode of its match in `episodes`; pass both roles' episodes of each match")
                partner = others[0] if others else None  # None: the other role never acted (replayed alone)
            if at_turns is None or isinstance(at_turns, str):
                if at_turns not in (None, "all", "every_turn"):
                    raise ValueError(f"branch: at_turns must be 'all', a list of turn indices or one list per episode, got {at_turns!r}")
                ks: Sequence[int] = range(ep.num_turns)
            elif len(at_turns) and not isinstance(at_turns[0], (int, np.integer)):
                ks = at_turns[i]  # type: ignore[assignment]
            else:
                ks = at_turns  # type: ignore[assignment]
            for k in ks:
                if not 0 <= int(k) < ep.num_turns:
                    continue
                for j in range(n):
                    meta = {**ep.meta, "branch_of": ep.episode_id, "branch_at": int(k)}
                    meta.pop("greedy_return", None)
                    meta.pop("backend_log", None)
                    specs.append(StartSpec(bucket=i, group_id=ep.group_id, member=j, seed=ep.seed,
                                           options=dict(ep.meta.get("options") or {}),
                                           env_kwargs=dict(ep.meta.get("env_kwargs") or {}), greedy=False,
                                           meta=meta, prefix=ep, prefix_turns=int(k), partner=partner))
        self._calls += 1
        return self._run(specs)

    def branch_every_turn(self, episodes: Sequence[Episode], n: int) -> list[Episode]:
        """`needs={"branches": {"at": "every_turn", "n": n}}`: n branches before every turn."""
        return self.branch(episodes, "all", n)

    def branch_tree(self, episodes: Sequence[Episode], n: int, depth: int) -> list[Episode]:
        """`needs={"branches": {"at": "tree", "n": n, "depth": d}}`: grow a prefix tree n ways at each of
        turns 1..depth (every leaf so far gets n - 1 new siblings there); returns the new episodes."""
        frontier = list(episodes)
        new: list[Episode] = []
        for d in range(1, depth + 1):
            grown = self.branch(frontier, [d], n - 1)
            frontier += grown
            new += grown
        return new

    def branch_for(self, episodes: Sequence[Episode], spec: Mapping[str, Any]) -> list[Episode]:
        """Dispatch an estimator's `needs["branches"]` spec (CREDIT.md 1.4)."""
        at = spec.get("at")
        if at == "every_turn":
            return self.branch_every_turn(episodes, int(spec["n"]))
        if at == "tree":
            return self.branch_tree(episodes, int(spec["n"]), int(spec.get("depth", 1)))
        raise ValueError(f"branches spec must have at='every_turn' or at='tree', got {dict(spec)!r}")

    def close(self) -> None:
        self.pool.close()

    # ------------------------------------------------------------------ envs
    def _responder(self, requests: Sequence[Any]) -> list[str]:
        """Default responder of self-search envs (ENVS.md section 5): the responder policy (or the
        policy itself) answers each request's prompt at temperature 1.0, 256 tokens."""
        policy = self.responder_policy if self.responder_policy is not None else self.policy
        renderer = self._renderer(policy)
        ctxs = []
        for req in requests:
            msgs = [{"role": "user", "content": req.prompt}]  # no agent system prompt for the simulator
            ctxs.append(Context(ids=renderer.first_ids(msgs), messages=msgs, obs_texts=[req.prompt], env_id=self.env_id))
        self._gen_calls += 1
        sampling = Sampling(temperature=1.0, max_new_tokens=256, seed=derive_seed(self._base_seed, self._gen_calls, 7))
        return [g.text for g in policy.generate(ctxs, sampling)]

    def _renderer(self, policy: Any) -> ChatRenderer:
        tok = policy.tokenizer
        r = self._renderers.get(id(tok))
        if r is None:
            r = ChatRenderer(tok, self.system_prompt)
            self._renderers[id(tok)] = r
        return r

    # ------------------------------------------------------------------ the loop
    def _run(self, specs: list[StartSpec]) -> list[Episode]:
        t_wall = time.perf_counter()
        self.stats = {"gen_s": 0.0, "env_s": 0.0, "env_wall_s": 0.0, "make_s": 0.0, "reset_s": 0.0, "probe_s": 0.0,
                      "action_tokens": 0.0, "gen_calls": 0.0}
        workers = self.pool.workers
        errors_before = dict(workers.stats)
        pending = deque(specs)
        active: list[Match] = []
        bucket_left: dict[int, int] = {}
        for s in specs:
            bucket_left[s.bucket] = bucket_left.get(s.bucket, 0) + 1
        done_by_bucket: dict[int, list[Match]] = {}
        out: dict[int, list[Episode]] = {}
        bar = _progress(len(specs)) if self.progress else None
        while pending or active:
            starts = []
            while pending:
                t0 = time.perf_counter()
                got = self.pool.acquire(pending[0].env_kwargs)
                self.stats["make_s"] += time.perf_counter() - t0
                if got is None:
                    break
                starts.append((pending.popleft(), *got))
            t0 = time.perf_counter()
            resets = workers.reset_many([(h, s.seed, *self._reset_request(s)) for s, _, h in starts])
            self.stats["reset_s"] += time.perf_counter() - t0
            active += [self._start(s, key, h, r) for (s, key, h), r in zip(starts, resets)]
            self._check_room(active)
            self._generate_and_step([m for m in active if not m.done])
            finished = [m for m in active if m.done]
            for m, backend_log in zip(finished, workers.backend_logs([m.env for m in finished])):
                m.backend_log = backend_log
            for m in finished:
                active.remove(m)
                self.pool.release(m.env_key, m.env)
                done_by_bucket.setdefault(m.spec.bucket, []).append(m)
                bucket_left[m.spec.bucket] -= 1
                if bar is not None:
                    bar[0].advance(bar[1])
                if bucket_left[m.spec.bucket] == 0:
                    out[m.spec.bucket] = self._finish_bucket(done_by_bucket.pop(m.spec.bucket))
        if bar is not None:
            bar[0].stop()
        self.stats["wall_s"] = time.perf_counter() - t_wall
        for key, value in workers.stats.items():  # env errors, recoveries, failed episodes, worker restarts
            self.stats[key] = float(value - errors_before[key])
        episodes = [ep for b in sorted(out) for ep in out[b]]
        self.stats["collector_truncated_frac"] = report_truncation(episodes, self.env_id, self.max_context_tokens)
        return episodes

    def _reset_request(self, spec: StartSpec) -> tuple[dict[str, Any] | None, list[str]]:
        """The reset options of a match and the actions to replay after the reset (a branch's prefix:
        TextEnv.replay's recipe; the determinism contract makes it exact)."""
        options = dict(spec.options)
        ep = spec.prefix
        if ep is None:
            return options or None, []
        if ep.meta.get("backend_log"):  # live backends answer the replay from the episode's response log
            options["backend_log"] = ep.meta["backend_log"]
        if spec.partner is not None:
            turns = {ep.role: ep.turns, spec.partner.role: spec.partner.turns}
            return options or None, [turns[role][j].action_text for _, role, j in _match_moves(spec)]
        return options or None, [t.action_text for t in ep.turns[: spec.prefix_turns]]

    def _start(self, spec: StartSpec, env_key: str, env: EnvHandle, reset: ResetResult | EnvFailure) -> Match:
        if isinstance(reset, EnvFailure):
            raise RuntimeError(f"{env.name}: reset (seed {spec.seed}, options {spec.options}) failed on the env and on a "
                               f"fresh one; fix the env or its backend (error below)\n{reset.error}")
        obs_role = str(env.metadata.get("obs_role", "user"))
        stop = tuple(dict.fromkeys((*self.sampling.stop, *tuple(env.metadata.get("stop", ()) or ()))))
        m = Match(spec=spec, env=env, env_key=env_key, obs_role=obs_role, stop=stop, default_role=env.default_role,
                  history=self._history_for(env))
        if spec.prefix is None:
            m.task_id = str(reset.info.get("task_id", ""))
            m.gold = tuple(reset.info.get("gold") or ())
            self._observe(m, str(reset.info.get("role", env.default_role)), reset.obs, reset.info)
        else:
            self._start_branch(m, spec, reset)
        return m

    def _history_for(self, env: EnvHandle) -> HistoryPolicy:
        """The Collector's history setting, else the env's `metadata["history"]` (default "full")."""
        if self.history is not None:
            hist = self.history
        else:
            try:
                hist = parse_history(env.metadata.get("history", "full"))
            except ValueError as e:
                raise ValueError(f"{env.name}.metadata['history']: {e}") from None
        if hist.per_turn and self.probes:
            raise ValueError(
                f"probes score prefixes of one growing conversation, but history is {hist.describe()!r} (a fresh "
                "prompt per turn); collect with history='full' (Collector(history='full'), --history full) to use probes"
            )
        return hist

    def _start_branch(self, m: Match, spec: StartSpec, reset: ResetResult) -> None:
        ep, k = spec.prefix, spec.prefix_turns
        assert ep is not None
        if ep.history != m.history.describe():
            raise ValueError(
                f"branch: episode {ep.episode_id} was collected with history {ep.history!r} but this Collector "
                f"uses {m.history.describe()!r}; branch with the history the episode was collected with"
            )
        if spec.partner is not None:
            self._start_two_player_branch(m, spec, reset)
            return
        # the reset replayed the prefix actions; the recorded rewards and observation must come back
        obs, first_info = (reset.steps[-1].obs if reset.steps else reset.obs), reset.info
        rewards = [s.reward for s in reset.steps]
        if obs != ep.turns[k].obs_text or rewards != [t.reward for t in ep.turns[:k]]:
            raise ValueError(
                f"branch: replaying episode {ep.episode_id} to turn {k} gave a different observation or reward "
                "than recorded; the env breaks the determinism contract (same seed + actions -> same results)"
            )
        m.task_id = ep.task_id
        m.gold = tuple(ep.meta.get("gold") or first_info.get("gold") or ())
        policy = self.policy_for(ep.role)
        conv = prefix_conv(ep, k, policy, self._renderer(policy), m.obs_role, m.history)
        m.convs[ep.role] = conv
        m.acting = ep.role

    def _start_two_player_branch(self, m: Match, spec: StartSpec, reset: ResetResult) -> None:
        """Check the replay of both roles' recorded actions before `ep`'s turn k (in match order), then
        rebuild both conversations from their recorded tokens (the other role's without a pending observation)."""
        ep, partner, k = spec.prefix, spec.partner, spec.prefix_turns
        assert ep is not None and partner is not None
        if m.history.per_turn:
            raise ValueError("branch: two-player matches branch with history='full' only")
        obs, info = reset.obs, reset.info
        rewards: dict[str, list[float]] = {ep.role: [], partner.role: []}
        for (_, role, _), step in zip(_match_moves(spec), reset.steps):
            if str(info.get("role", role)) != role:
                raise ValueError(f"branch: replaying match {ep.meta.get('match_id')} the env asked {info.get('role')!r} "
                                 f"to act where {role!r} acted; the env breaks the determinism contract")
            obs, info = step.obs, step.info
            rewards[role].append(step.reward)
        if obs != ep.turns[k].obs_text or rewards[ep.role] != [t.reward for t in ep.turns[:k]]:
            raise ValueError(
                f"branch: replaying match {ep.meta.get('match_id')} to {ep.role}'s turn {k} gave a different observation "
                "or reward than recorded; the env breaks the determinism contract (same seed + actions -> same results)"
            )
        m.task_id = ep.task_id
        m.gold = tuple(ep.meta.get("gold") or ())
        policy = self.policy_for(ep.role)
        m.convs[ep.role] = prefix_conv(ep, k, policy, self._renderer(policy), m.obs_role, m.history)
        if rewards[partner.role]:
            other = self.policy_for(partner.role)
            m.convs[partner.role] = played_conv(partner, len(rewards[partner.role]), rewards[partner.role], other,
                                                self._renderer(other), m.obs_role)  # fmt: skip
        m.acting = ep.role

    def _observe(self, m: Match, role: str, obs: str, info: Mapping[str, Any]) -> None:
        """Append observation `obs` to `role`'s conversation (creating it on the role's first view)."""
        conv = m.convs.get(role)
        fresh = conv is None
        if conv is None:
            policy = m.spec.policies[role] if m.spec.policies and role in m.spec.policies else self.policy_for(role)
            if self.policies and role not in self.policies and len(self.policies) > 1:
                raise KeyError(f"the env asks role {role!r} to act but policies has only {sorted(self.policies)}")
            conv = RoleConv(role=role, policy=policy, renderer=self._renderer(policy))
            m.convs[role] = conv
        if m.history.per_turn:  # a fresh prompt each turn: exactly the ids this turn is sampled from
            conv.messages = conv.renderer.with_system(m.history.messages([*conv.obs_texts, obs], conv.action_texts))
            delta = conv.renderer.first_ids(conv.messages)
            conv.ids = []
        elif fresh:
            conv.messages = conv.renderer.first_messages(obs)
            delta = conv.renderer.first_ids(conv.messages)
        elif m.obs_role == "continuation":
            delta = conv.renderer.continuation_ids(obs)
            append_assistant(conv.messages, obs)
        else:
            new = conv.renderer.observation_messages(obs, m.obs_role, dict(info))
            last = conv.turns[-1].action_ids if conv.turns else ()
            delta = conv.renderer.delta_ids(conv.ids, conv.messages, new, last)
            conv.messages += new
        conv.ids += delta
        conv.pending_obs_ids = list(delta)
        conv.pending_obs_text = obs
        conv.obs_texts.append(obs)
        conv.state_key = str(info.get("state_key", ""))
        conv.abstract_state = str(info["abstract_state"]) if "abstract_state" in info else None
        m.acting = role

    def _check_room(self, active: list[Match]) -> None:
        for m in active:
            conv = m.convs[m.acting] if not m.done else None
            if conv is None or len(conv.ids) < self.max_context_tokens:
                continue
            if m.history.per_turn:
                where = f"turn {len(conv.turns)} of {self.env_id or 'the env'} (task {m.task_id!r})"
                raise prompt_too_long(m.history, where, len(conv.ids), self.max_context_tokens)
            m.end_collector_truncated()

    def _generate_and_step(self, matches: list[Match]) -> None:
        batches: dict[tuple[Any, ...], list[Match]] = {}
        for m in matches:
            conv = m.convs[m.acting]
            cap = min(self.sampling.max_new_tokens, self.max_context_tokens - len(conv.ids))
            key = (id(conv.policy), m.spec.greedy, m.stop, cap)
            batches.setdefault(key, []).append(m)
        for (_, greedy, stop, cap), group in batches.items():
            convs = [m.convs[m.acting] for m in group]
            self._gen_calls += 1
            sampling = dataclasses.replace(
                self.sampling, stop=stop, max_new_tokens=int(cap),
                temperature=0.0 if greedy else self.sampling.temperature,
                seed=derive_seed(self._base_seed if self.sampling.seed is None else self.sampling.seed, self._gen_calls),
            )
            pre = self._prefill_for(convs[0].policy)
            if pre and cap <= len(pre):
                raise ValueError(f"prefill {self.prefill!r} is {len(pre)} tokens but only {cap} new tokens fit; raise "
                                 "max_new_tokens (or max_context_tokens) or shorten the prefill")
            sampling = dataclasses.replace(sampling, max_new_tokens=int(cap) - len(pre))
            ctxs = [Context(ids=list(c.ids) + pre, messages=[dict(x) for x in c.messages], obs_texts=list(c.obs_texts),
                            action_texts=list(c.action_texts), role=c.role, env_id=self.env_id, prefill=self.prefill)
                    for c in convs]
            t0 = time.perf_counter()
            gens = convs[0].policy.generate(ctxs, sampling)
            gen_s = time.perf_counter() - t0
            self.stats["gen_s"] += gen_s
            self.stats["gen_calls"] += 1
            if len(gens) != len(ctxs):
                raise ValueError(f"policy.generate returned {len(gens)} generations for {len(ctxs)} contexts")
            acted = []
            for m, conv, gen in zip(group, convs, gens):
                if pre and gen.token_ids:  # the reply = prefill + continuation, tokens recorded exactly
                    sampled_lp = gen.logprobs or (0.0,) * len(gen.token_ids)
                    gen = Generation(token_ids=(*pre, *gen.token_ids), logprobs=(*(0.0,) * len(pre), *sampled_lp),
                                     text=self.prefill + gen.text, finish_reason=gen.finish_reason)
                if self._has_action(m, conv, gen):
                    acted.append((m, conv, gen))
            t0 = time.perf_counter()  # every env of the batch steps at once (in parallel with env workers)
            results = self.pool.workers.step_many([(m.env, gen.text) for m, _, gen in acted])
            self.stats["env_wall_s"] += time.perf_counter() - t0
            for (m, conv, gen), result in zip(acted, results):
                self._step(m, conv, gen, result, gen_s, len(group), len(pre))

    def _prefill_for(self, policy: Any) -> list[int]:
        """The prefill's token ids in `policy`'s tokenizer (cached per tokenizer)."""
        if not self.prefill:
            return []
        tok = policy.tokenizer
        if id(tok) not in self._prefill_ids:
            self._prefill_ids[id(tok)] = [int(i) for i in tok.encode(self.prefill, add_special_tokens=False)]
        return self._prefill_ids[id(tok)]

    def _has_action(self, m: Match, conv: RoleConv, gen: Generation) -> bool:
        """False where the generation is a backend failure (the episode then ends); raises on no tokens."""
        if not gen.token_ids and gen.finish_reason == "error":  # OpenAIPolicy(on_error="empty"): a backend failure
            log.warning(
                "%s returned an empty generation with finish_reason='error' on %s (task %r, turn %d): the episode "
                "ends as a backend failure and is excluded from training", type(conv.policy).__name__,
                self.env_id or m.env.name, m.task_id, len(conv.turns),
            )  # fmt: skip
            m.end_generation_error()
            return False
        if not gen.token_ids:
            raise ValueError(
                f"{type(conv.policy).__name__}.generate returned no tokens; every action needs at least one "
                "token (keep the stop or end-of-turn token)"
            )
        return True

    def _step(
        self, m: Match, conv: RoleConv, gen: Generation, result: StepResult | EnvFailure, gen_s: float, batch: int,
        n_prefill: int = 0,
    ) -> None:
        if isinstance(result, EnvFailure):  # the env failed twice (or could not be restored by replay)
            log.warning("%s failed on task %r, turn %d, and replay on a fresh env could not recover it: the episode "
                        "ends truncated with outcome['env_error'] = 1 and is excluded from training",
                        self.env_id or m.env.name, m.task_id, len(conv.turns))
            m.end_env_error(result.error)
            return
        action_ids = [int(i) for i in gen.token_ids]
        obs, reward, terminated, truncated, info, env_s = (result.obs, result.reward, result.terminated,
                                                            result.truncated, result.info, result.env_s)
        self.stats["env_s"] += env_s
        if not math.isfinite(reward):  # kept as given (the store keeps it); the trainer drops the group
            log.warning(
                "%s returned a non-finite reward %r (task %r, turn %d); the episode is marked "
                "meta['train_excluded']='nonfinite_reward'", self.env_id or m.env.name, reward,
                m.task_id, len(conv.turns),
            )  # fmt: skip
            m.nonfinite_reward = True
        self.stats["action_tokens"] += len(action_ids)
        spans = info.get("mask_spans")
        mask = char_mask_to_token_mask(conv.policy.tokenizer, action_ids, spans) if spans else None
        turn_info = {"gen_s": gen_s, "env_s": env_s, "gen_batch": batch, "finish_reason": gen.finish_reason}
        if n_prefill:  # not sampled: no RL loss on these tokens (SFT on self-generated plans unmasks them)
            mask = [0] * n_prefill + list(mask[n_prefill:] if mask is not None else [1] * (len(action_ids) - n_prefill))
            turn_info["prefill_tokens"] = n_prefill
        for key in ("backend_error", "internal_error", "action_sanitized", "noise_prob"):
            if key in info:
                turn_info[key] = info[key]
        if conv.abstract_state is not None:  # the state this turn's action was taken from (pvd)
            turn_info["abstract_state"] = conv.abstract_state
        if m.env.metadata.get("two_player"):  # the match-wide order of moves (two-player branching)
            turn_info[MATCH_STEP] = sum(len(c.turns) for c in m.convs.values())
        conv.add_turn(action_ids, gen, mask, float(reward), bool(info.get("invalid", False)), turn_info)
        if m.obs_role == "continuation":
            append_assistant(conv.messages, gen.text)
        else:
            conv.messages.append({"role": "assistant", "content": gen.text})
        conv.action_texts.append(gen.text)
        conv.ids += action_ids
        next_role = str(info.get("role", conv.role))
        self._observe(m, next_role, obs, info)
        if terminated or truncated:
            m.end_env(bool(terminated), dict(info))

    def _finish_bucket(self, matches: list[Match]) -> list[Episode]:
        matches.sort(key=lambda x: x.spec.member)
        greedy = [m for m in matches if m.spec.greedy]
        greedy_returns = greedy[0].role_returns() if greedy else None
        episodes: list[Episode] = []
        for m in matches:
            if m.spec.greedy:
                continue
            for ep in build_episodes(m, self._run_id):
                if greedy_returns is not None and ep.role in greedy_returns:
                    ep.meta["greedy_return"] = greedy_returns[ep.role]
                if m.spec.prefix is not None:
                    key = f"{ep.group_id}\x00{ep.role}"
                    ep = dataclasses.replace(ep, node_ids=prefix_node_ids(key, [t.action_ids for t in ep.turns]))
                    if self.probes:
                        ep.meta["_prefix"] = m.spec.prefix
                episodes.append(ep)
        if self.probes and episodes:
            t0 = time.perf_counter()
            episodes = apply_probes(self.probes, episodes, self.policy_for, matches[0].env.metadata)
            episodes = [_keep_prefix(ep) for ep in episodes]
            self.stats["probe_s"] += time.perf_counter() - t0
        if self.store is not None:
            self.store.extend(episodes)
        return episodes


def _keep_prefix(ep: Episode) -> Episode:
    """A branch keeps its prefix turns (probe scores included) exactly as the original recorded them."""
    original = ep.meta.get("_prefix")
    if original is None:
        return ep
    meta = {k: v for k, v in ep.meta.items() if k != "_prefix"}
    k = int(meta["branch_at"])
    return dataclasses.replace(ep, turns=(*original.turns[:k], *ep.turns[k:]), probe0=dict(original.probe0), meta=meta)


def _match_moves(spec: StartSpec) -> list[tuple[int, str, int]]:
    """A two-player branch's replay: `(match step, role, turn index)` of both roles' moves before the
    branch point, in match order."""
    ep, partner = spec.prefix, spec.partner
    assert ep is not None and partner is not None
    if any(MATCH_STEP not in t.info for t in (*ep.turns, *partner.turns)):
        raise ValueError(f"branch: episode {ep.episode_id} has no Turn.info[{MATCH_STEP!r}]; it was not collected "
                         "by this Collector from a two-player env (metadata['two_player'])")
    at = int(ep.turns[spec.prefix_turns].info[MATCH_STEP])
    return sorted((int(t.info[MATCH_STEP]), e.role, j) for e in (ep, partner) for j, t in enumerate(e.turns)
                  if int(t.info[MATCH_STEP]) < at)  # fmt: skip


def _progress(total: int) -> tuple[Any, Any]:
    from rich.progress import Progress

    bar = Progress(transient=True)
    task = bar.add_task("episodes", total=total)
    bar.start()
    return bar, task
