"""DigiQTrainer: a Q-function on frozen features and best-of-N policy extraction, fully offline
(METHODS.md 7; Digi-Q, arXiv 2502.15760, code DigiRL-agent/digiq).

Phase 1, representation fine-tuning: a copy of the policy LM learns (masked next-token loss on the
answer) whether an action changes the screen: `"{obs}\\nAction: {action}\\nWill this action change the
screen? Answer Yes or No."` -> ` Yes` iff the next state's `state_key` differs.
Phase 2, TD on the copy's frozen features (`phi(s, a)` and `phi(s)`: mean-pooled hidden states):
twin Q and V heads with Polyak-averaged targets,

    L_Q = mean (Q_i(s,a) - [r + gamma (1 - done) Vbar_i(s')])^2,   L_V = mean (V_i(s) - Qbar_i(s, a_data))^2

Phase 3, best-of-N extraction: candidates = the dataset action + N-1 policy samples (cached);
`adv_j = max_i Q_i(s, a_j) - max_i V_i(s)` (0 for invalid actions), `j* = argmax adv_j`,
`a = clamp(adv_j*, 0, 1)`, and `L_pi = -mean_s 1[a > thr] sum_t M logp(a_j* | s)`.

One trainer step is one phase-1 optimizer step, one phase-2 epoch or one phase-3 actor step, so the
loop checkpoints and resumes (trainers/loop.py) in any phase; the fine-tuned copy is the second
learner (`"repr"`), the heads, their targets and the candidates are the trainer's state.

    DigiQTrainer(policy, DEVICE, DigiQConfig(), episodes=collect_offline(DEVICE, tokenizer=policy.tokenizer)).train()
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from creditgym.agents.base import Context, Sampling, TrainablePolicy
from creditgym.agents.hf import HFPolicy
from creditgym.agents.rollout import derive_seed
from creditgym.agents.scripted import RandomPolicy
from creditgym.batch import CreditBatch
from creditgym.envs.device.actions import parse_action
from creditgym.store import RolloutStore
from creditgym.trainers import losses
from creditgym.trainers.digirl import weighted_nll
from creditgym.trainers.logprobs import first_loss_position, forward_logprobs
from creditgym.trainers.loop import TrainerLoop, check_finite_config
from creditgym.trainers.schedule import Learner, build_optimizer, optimizer_step
from creditgym.trainers.value_heads import MLPHead, polyak_, pooled_features, prompt_ids
from creditgym.trajectory import Episode, Turn

__all__ = [
    "DigiQConfig", "DigiQTrainer", "Transition", "best_of_n", "device_action_valid", "repr_prompt", "td_targets",
    "transitions",
]  # fmt: skip

QUESTION = "\nWill this action change the screen? Answer Yes or No."


@dataclass
class DigiQConfig:
    """Digi-Q knobs; release defaults (DigiRL-agent/digiq) in the docstrings, ours sized for CPU."""

    gamma: float = 0.95
    """TD discount (release 0.95)."""
    tau: float = 0.1
    """Polyak rate of the target heads, once per epoch (release 0.1)."""
    critic_epochs: int = 20
    """TD epochs over the transitions (release 40 iterations x 20 epochs)."""
    critic_batch: int = 32
    """Transitions per critic step (release 32 x grad_accum 4)."""
    critic_hidden: int = 128
    """Hidden width of the Q and V heads."""
    critic_lr: float = 1e-3
    """Head learning rate (release 1e-5 on its larger heads)."""
    head_reduce: str = "max"
    """How the twin heads combine at extraction: "max" (the release) or "min"."""
    repr_epochs: int = 1
    """Representation fine-tuning epochs (release 0.01 epoch of LLaVA-7B; ours 1)."""
    repr_batch: int = 8
    """Screen-change examples per fine-tuning step."""
    repr_lr: float = 1e-3
    """Fine-tuning learning rate of the copy (release 2e-5; the tiny model takes ~1e-3)."""
    feature_layer: int = -1
    """Hidden layer of the fine-tuned copy read as features (the release reads the last)."""
    n_candidates: int = 4
    """Candidates per state: the dataset action + n-1 policy samples (release 16 of 64 cached)."""
    candidate_temperature: float = 1.0
    """Sampling temperature of the policy's candidates."""
    max_new_tokens: int = 64
    """Tokens per sampled candidate."""
    actor_steps: int = 20
    """Actor optimizer steps (release 30 iterations x 30 epochs)."""
    actor_batch_states: int = 16
    """States per actor step (drawn with the trainer's seeded generator)."""
    thr: float = 0.10
    """Imitate a state's best candidate only when its clamped advantage exceeds this (release 0.10, General)."""
    lr: float = 1e-4
    """Actor learning rate (release lm_lr 1e-4)."""
    weight_decay: float = 0.0
    """AdamW weight decay of the actor."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up of the actor, in optimizer steps."""
    max_grad_norm: float = 1.0
    """Actor gradient clipping (release 0.01)."""
    token_budget: int = 8192
    """Padded tokens per micro-batch (fine-tuning, features, actor)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Env kwargs of the offline data (`creditgym train --trainer digiq` collects it with them)."""
    seed: int = 0
    """Seeds the fine-tuning order, critic minibatches, candidates and actor draws."""
    out_dir: str | None = None
    """Where metrics, checkpoints and the feature cache (digiq_features.pt) go."""
    checkpoint_every: int = 0
    """Write out_dir/checkpoint.pt every N trainer steps (0: never)."""
    resume: bool = False
    """Continue from out_dir/checkpoint.pt when it exists."""
    progress: bool = False
    """Show a rich progress bar."""
    tensorboard: bool = True
    """Write tensorboard logs to out_dir."""

    def __post_init__(self) -> None:
        check_finite_config(self)
        if self.head_reduce not in ("max", "min"):
            raise ValueError(f"head_reduce must be 'max' or 'min', got {self.head_reduce!r}")
        if self.n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1 (the dataset action), got {self.n_candidates}")


@dataclass(frozen=True)
class Transition:
    """One step of an offline episode, as Digi-Q reads it."""

    prompt_ids: tuple[int, ...]
    """The tokens the policy sampled this action from (the actor's input)."""
    action_ids: tuple[int, ...]
    obs: str
    action: str
    reward: float
    done: bool
    """The episode terminated with this step (truncation bootstraps: done stays False)."""
    next_obs: str
    changed: bool | None
    """The next state's key differs from this one's (None when unknown: the last step)."""


def transitions(episodes: Sequence[Episode]) -> list[Transition]:
    """Every step of `episodes` with its next observation and screen-change label."""
    out = []
    for ep in episodes:
        for k, t in enumerate(ep.turns):
            last = k == ep.num_turns - 1
            nxt = ep.final_obs_text if last else ep.turns[k + 1].obs_text
            changed = None if last else ep.turns[k + 1].state_key != t.state_key
            out.append(Transition(tuple(prompt_ids(ep, k)), tuple(t.action_ids), t.obs_text, t.action_text,
                                  float(t.reward), bool(last and ep.terminated), nxt, changed))  # fmt: skip
    return out


def repr_prompt(obs: str, action: str | None = None) -> str:
    """The text Digi-Q's features read: the state, or the state and the action."""
    return obs if action is None else f"{obs}\nAction: {action}"


def td_targets(r_N: torch.Tensor, done_N: torch.Tensor, vbar_next_NI: torch.Tensor, gamma: float) -> torch.Tensor:
    """`r + gamma * (1 - done) * Vbar_i(s')` per head i."""
    return r_N[:, None] + gamma * (1.0 - done_N.float())[:, None] * vbar_next_NI


def best_of_n(q_SN: torch.Tensor, v_S: torch.Tensor, valid_SN: torch.Tensor, thr: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per state: `adv = q - v` (0 for invalid candidates), `j* = argmax adv`, `a = clamp(adv_j*, 0, 1)`,
    and whether it is imitated (`a > thr`). Returns (j*_S, a_S, imitate_S)."""
    adv_SN = torch.where(valid_SN, q_SN - v_S[:, None], torch.zeros_like(q_SN))
    j_S = adv_SN.argmax(1)
    a_S = adv_SN.gather(1, j_S[:, None]).squeeze(1).clamp(0.0, 1.0)
    return j_S, a_S, a_S > thr


def device_action_valid(text: str) -> bool:
    """Device-v0's parser accepts the reply (an invalid action gets advantage 0)."""
    return not isinstance(parse_action(text), str)


def _reduce(x_NI: torch.Tensor, how: str) -> torch.Tensor:
    return x_NI.max(-1).values if how == "max" else x_NI.min(-1).values


class DigiQTrainer(TrainerLoop):
    """Digi-Q on the offline `episodes` (or `store.read()`) of `env_id`; trains `policy` in phase 3."""

    description = "digiq"

    def __init__(
        self,
        policy: TrainablePolicy,
        env_id: str,
        config: DigiQConfig | None = None,
        episodes: Sequence[Episode] | None = None,
        store: RolloutStore | None = None,
        is_valid: Callable[[str], bool] | None = None,
    ):
        cfg = config or DigiQConfig()
        eps = list(episodes) if episodes is not None else (store.read() if store is not None else [])
        self.data = transitions([e for e in eps if e.num_turns > 0])
        if not self.data:
            raise ValueError("Digi-Q is offline: pass episodes=collect_offline(...) or store=RolloutStore(path)")
        self.policy, self.env_id = policy, env_id
        self.is_valid = is_valid or device_action_valid
        self.tokenizer = policy.tokenizer
        self.repr_policy = HFPolicy(copy.deepcopy(policy.model), policy.tokenizer)
        self.repr_rows = [self._repr_row(t) for t in self.data if t.changed is not None]
        self.repr_steps = math.ceil(len(self.repr_rows) / cfg.repr_batch) * cfg.repr_epochs
        d = int(self.repr_policy.base_model().config.hidden_size)
        self.q = MLPHead(d, cfg.critic_hidden, 2, seed=cfg.seed)
        self.v = MLPHead(d, cfg.critic_hidden, 2, seed=cfg.seed + 1)
        self.q_target, self.v_target = copy.deepcopy(self.q), copy.deepcopy(self.v)
        self.critic_opt = torch.optim.Adam([*self.q.parameters(), *self.v.parameters()], lr=cfg.critic_lr)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.candidates: list[list[tuple[tuple[int, ...], str]]] = []
        self._features: dict[str, torch.Tensor] = {}
        opt, sched = build_optimizer(policy.model, cfg.lr, cfg.weight_decay, cfg.warmup_steps)
        r_opt, r_sched = build_optimizer(self.repr_policy.model, cfg.repr_lr, 0.0, 0)
        learners = {"agent": Learner(policy, opt, sched), "repr": Learner(self.repr_policy, r_opt, r_sched)}
        self._setup_loop(learners, cfg, self.repr_steps + cfg.critic_epochs + cfg.actor_steps)
        self.maybe_resume()

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Heads, targets, their optimizer, the generator and the cached candidates."""
        return {
            "q": self.q.state_dict(), "v": self.v.state_dict(), "q_target": self.q_target.state_dict(),
            "v_target": self.v_target.state_dict(), "critic_opt": self.critic_opt.state_dict(),
            "gen": self.gen.get_state(), "candidates": self.candidates,
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("q", "v", "q_target", "v_target", "critic_opt"):
            getattr(self, name).load_state_dict(state[name])
        self.gen.set_state(state["gen"])
        self.candidates = [[(tuple(ids), text) for ids, text in c] for c in state["candidates"]]

    # ------------------------------------------------------------------ phase 1
    def _encode(self, text: str) -> list[int]:
        return [int(i) for i in self.tokenizer.encode(text, add_special_tokens=False)]

    def _repr_row(self, t: Transition) -> tuple[list[int], list[int]]:
        return self._encode(repr_prompt(t.obs, t.action) + QUESTION), self._encode(" Yes" if t.changed else " No")

    def repr_step(self, local: int) -> dict[str, float]:
        """One optimizer step of the copy on a seeded-permuted slice of the screen-change examples."""
        cfg = self.config
        per_epoch = math.ceil(len(self.repr_rows) / cfg.repr_batch)
        epoch, pos = divmod(local, per_epoch)
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(self.repr_rows))
        rows = [self.repr_rows[i] for i in order[pos * cfg.repr_batch : (pos + 1) * cfg.repr_batch]]
        T = max(len(p) + len(a) for p, a in rows)
        ids = torch.zeros(len(rows), T, dtype=torch.long)
        attn = torch.zeros_like(ids)
        mask = torch.zeros(len(rows), T, dtype=torch.bool)
        for i, (p, a) in enumerate(rows):
            ids[i, : len(p) + len(a)] = torch.tensor(p + a)
            attn[i, : len(p) + len(a)] = 1
            mask[i, len(p) : len(p) + len(a)] = True
        self.repr_policy.model.train()
        logp_BT, _ = forward_logprobs(self.repr_policy, ids, attn, start=first_loss_position(mask), mask_BT=mask)
        loss = losses.sft_loss(logp_BT, mask.to(logp_BT.device))
        ln = self.learners["repr"]
        if losses.has_nonfinite(loss):
            return self._skip("non-finite representation loss")
        loss.backward()
        norm = optimizer_step(ln.optimizer, ln.scheduler, 1.0)
        return {"repr/loss": float(loss.detach()), "repr/grad_norm": norm}

    # ------------------------------------------------------------------ features
    def fingerprint(self) -> str:
        h = hashlib.blake2b(digest_size=8)
        for p in self.repr_policy.model.parameters():
            h.update(p.detach().cpu().numpy().tobytes())
        return h.hexdigest()

    def features(self, texts: Sequence[str]) -> torch.Tensor:
        """`[N, H]` features of texts under the fine-tuned copy, cached per text (and on disk in
        out_dir, keyed by the copy's weights, so a changed copy recomputes them)."""
        missing = sorted({t for t in texts if t not in self._features})
        if missing:
            cfg = self.config
            X = pooled_features(self.repr_policy.base_model(), [self._encode(t) for t in missing], cfg.token_budget,
                                cfg.feature_layer)  # fmt: skip
            self._features.update(zip(missing, X, strict=True))
        return torch.stack([self._features[t] for t in texts])

    def _load_feature_cache(self) -> None:
        path = Path(self.config.out_dir) / "digiq_features.pt" if self.config.out_dir else None
        key = self.fingerprint()
        if path is not None and path.is_file():
            saved = torch.load(path, weights_only=False)
            if saved.get("key") == key:
                self._features = dict(saved["features"])
        self._cache_key = key

    def _save_feature_cache(self) -> None:
        if self.config.out_dir:
            path = Path(self.config.out_dir) / "digiq_features.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"key": self._cache_key, "features": self._features}, path)

    def q_values(self, obs: Sequence[str], actions: Sequence[str]) -> torch.Tensor:
        """Twin-head Q reduced by `head_reduce`, for (observation, action) texts."""
        with torch.no_grad():
            return _reduce(self.q(self.features([repr_prompt(o, a) for o, a in zip(obs, actions, strict=True)])),
                           self.config.head_reduce)  # fmt: skip

    def state_values(self, obs: Sequence[str]) -> torch.Tensor:
        with torch.no_grad():
            return _reduce(self.v(self.features([repr_prompt(o) for o in obs])), self.config.head_reduce)

    # ------------------------------------------------------------------ phase 2
    def critic_epoch(self) -> dict[str, float]:
        """One TD epoch of the twin Q and V heads over all transitions, then a Polyak update."""
        cfg = self.config
        if not self._features:
            self._load_feature_cache()
        Xsa = self.features([repr_prompt(t.obs, t.action) for t in self.data])
        Xs = self.features([repr_prompt(t.obs) for t in self.data])
        Xn = self.features([repr_prompt(t.next_obs or t.obs) for t in self.data])
        self._save_feature_cache()
        if self.step_idx == self.repr_steps:
            for head, X in ((self.q, Xsa), (self.v, Xs), (self.q_target, Xsa), (self.v_target, Xs)):
                head.set_scale(X)
        r_N = torch.tensor([t.reward for t in self.data])
        done_N = torch.tensor([t.done for t in self.data])
        N = len(self.data)
        perm = torch.randperm(N, generator=self.gen)
        lq = lv = 0.0
        for s in range(0, N, cfg.critic_batch):
            idx = perm[s : s + cfg.critic_batch]
            with torch.no_grad():
                y_q = td_targets(r_N[idx], done_N[idx], self.v_target(Xn[idx]), cfg.gamma)
                y_v = self.q_target(Xsa[idx])
            loss_q = torch.nn.functional.mse_loss(self.q(Xsa[idx]), y_q)
            loss_v = torch.nn.functional.mse_loss(self.v(Xs[idx]), y_v)
            self.critic_opt.zero_grad(set_to_none=True)
            (loss_q + loss_v).backward()
            self.critic_opt.step()
            lq += float(loss_q.detach()) * len(idx) / N
            lv += float(loss_v.detach()) * len(idx) / N
        polyak_(self.q_target, self.q, cfg.tau)
        polyak_(self.v_target, self.v, cfg.tau)
        return {"critic/q_loss": lq, "critic/v_loss": lv}

    # ------------------------------------------------------------------ phase 3
    def sample_candidates(self) -> None:
        """The dataset action plus n-1 policy samples per state, sampled once and cached."""
        cfg = self.config
        ctxs = [Context(ids=list(t.prompt_ids)) for t in self.data]
        cands: list[list[tuple[tuple[int, ...], str]]] = [[(t.action_ids, t.action)] for t in self.data]
        for j in range(cfg.n_candidates - 1):
            sampling = Sampling(temperature=cfg.candidate_temperature, max_new_tokens=cfg.max_new_tokens,
                                seed=derive_seed(cfg.seed, 7, j))  # fmt: skip
            for i, g in enumerate(self.policy.generate(ctxs, sampling)):
                cands[i].append((tuple(g.token_ids), g.text))
        self.candidates = cands

    def actor_step(self) -> dict[str, float]:
        """Best-of-N extraction on `actor_batch_states` states drawn with the trainer's generator."""
        cfg = self.config
        if not self.candidates:
            self.sample_candidates()
        idx = torch.randperm(len(self.data), generator=self.gen)[: cfg.actor_batch_states].tolist()
        n = cfg.n_candidates
        obs = [self.data[i].obs for i in idx]
        acts = [self.candidates[i][j][1] for i in idx for j in range(n)]
        q_SN = self.q_values([o for o in obs for _ in range(n)], acts).view(len(idx), n)
        valid_SN = torch.tensor([self.is_valid(a) for a in acts]).view(len(idx), n)
        j_S, a_S, imitate_S = best_of_n(q_SN, self.state_values(obs), valid_SN, cfg.thr)
        metrics = {"actor/imitated_frac": float(imitate_S.float().mean()), "actor/a_mean": float(a_S.mean()),
                   "actor/dataset_action_frac": float((j_S == 0).float().mean())}  # fmt: skip
        chosen = [(self.data[i].prompt_ids, self.candidates[i][int(j)][0]) for i, j, k in zip(idx, j_S, imitate_S) if k]
        if not chosen:
            return {**metrics, **self._skip("no state's best candidate clears thr")}
        batch = CreditBatch.from_episodes(
            [Episode(turns=(Turn(obs_ids=p, action_ids=a, action_text=""),)) for p, a in chosen]
        )
        loss = weighted_nll(self.policy, batch, batch.loss_mask_BT.float(), float(len(idx)), cfg.token_budget)
        if loss is None:
            return {**metrics, **self._skip("non-finite actor loss")}
        norm = optimizer_step(self.optimizer, self.scheduler, cfg.max_grad_norm)
        return {**metrics, "actor/loss": loss, "actor/grad_norm": norm}

    def q_ranking(self, episodes: Sequence[Episode], seed: int = 0) -> float:
        """How often Q ranks each step's own action (e.g. the expert's, on held-out episodes) above a
        random well-formed action from the same state (`RandomPolicy`; ties count 1/2, states where
        the random action equals the episode's are skipped). 0.5 is chance."""
        rnd = RandomPolicy.for_env(self.env_id, seed=seed)
        obs, own, other = [], [], []
        for ep in episodes:
            for k, t in enumerate(ep.turns):
                ctx = Context(obs_texts=[u.obs_text for u in ep.turns[: k + 1]],
                              action_texts=[u.action_text for u in ep.turns[:k]], env_id=self.env_id)  # fmt: skip
                r = rnd.generate([ctx], Sampling())[0].text
                if r != t.action_text:
                    obs.append(t.obs_text)
                    own.append(t.action_text)
                    other.append(r)
        if not obs:
            return float("nan")
        q_own, q_other = self.q_values(obs, own), self.q_values(obs, other)
        return float(((q_own > q_other).float() + 0.5 * (q_own == q_other).float()).mean())

    def _step(self) -> dict[str, float]:
        i = self.step_idx
        if i < self.repr_steps:
            return self.repr_step(i)
        if i < self.repr_steps + self.config.critic_epochs:
            return self.critic_epoch()
        return self.actor_step()
