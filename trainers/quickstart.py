"""`creditgym quickstart`: the whole loop offline on a laptop CPU in a few minutes.

1. build the tiny from-scratch model and tokenizer (agents/tiny.py, cached), then an induction
   warm-up on synthetic copy rows (agents/induction.py) so it can copy names it has never seen;
2. SFT warm start on episodes of a deliberately imperfect scripted expert
   (`ScriptedPolicy.for_env(env, epsilon=...)`: a random well-formed action with probability epsilon);
3. evaluate on the env's test split (before RL);
4. RL with a turn-level credit estimator (GRPOTrainer);
5. evaluate again on the same test tasks (after RL);

and write `summary.json` (ARCHITECTURE.md "Entry points"), `episodes.jsonl` (the RL episodes, a
RolloutStore file), `reward_curve.png`, `metrics.jsonl`, tensorboard logs (`tb/`, `sft/`) and the
models as Hugging Face folders: `sft_model/` (the warm start) and `final_model/` (after RL), each
with an `eval_config.json` (the test-split evaluation above) that `creditgym eval` uses as its
defaults, so `creditgym eval creditgym/SearchEasy-v0 --model OUT/final_model` reproduces "after".
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from creditgym.agents import pretrained, tiny
from creditgym.agents.base import Sampling, TrainablePolicy
from creditgym.agents.hf import HFPolicy
from creditgym.agents.induction import InductionConfig, induction_warmup
from creditgym.agents.rollout import Collector
from creditgym.agents.scripted import ScriptedPolicy
from creditgym.envs.search import SEARCH_EASY
from creditgym.store import RolloutStore
from creditgym.trainers.evaluate import evaluate, save_eval_config
from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer
from creditgym.trainers.loop import check_finite_config
from creditgym.trainers.run_log import StageTimer
from creditgym.trainers.sft import SFTConfig, SFTTrainer
from creditgym.trajectory import Episode, episode_success

__all__ = ["QuickstartConfig", "plot_reward_curve", "run_quickstart", "save_model", "small_warm_start", "tiny_policy",
           "warm_start"]

log = logging.getLogger(__name__)


@dataclass
class QuickstartConfig:
    """Budget of the quickstart, tuned so RL visibly improves on the SFT warm start on 2 CPU cores."""

    env_id: str = SEARCH_EASY
    seed: int = 0
    threads: int = 2
    """torch intra-op threads."""
    hidden_size: int = 128
    """Tiny model width (agents/tiny.py TinyConfig)."""
    num_layers: int = 3
    induction_steps: int = 900
    """Induction warm-up steps before SFT (agents/induction.py; 0 = off). Test-world names are
    unseen, so answering needs copying, which SFT alone does not teach the tiny model in budget."""
    induction_digit_fraction: float = 0.0
    """Share of induction rows made of digits (InductionConfig.digit_fraction): copying numbers, as
    Tools' arithmetic needs. 0 keeps Search's warm-up unchanged."""
    expert_episodes: int = 2048
    """Scripted episodes for the warm start."""
    epsilon: float = 0.4
    """Probability that the expert takes a random well-formed action instead (room for RL)."""
    sft_epochs: int = 6
    """SFT passes over the expert episodes (4 left seed 2 with a 0.005 warm start that RL could not lift)."""
    sft_lr: float = 3e-3
    sft_successes_only: bool = False
    """SFT only on the expert episodes that succeeded (rejection sampling on the imperfect expert:
    its random detours stay in the kept episodes, its failures do not)."""
    sft_lr_schedule: str = "constant"
    """SFT learning-rate schedule after warm-up: constant, linear or cosine (trainers.schedule.lr_factor)."""
    sft_batch_episodes: int = 16
    """Episodes per SFT step. Window-history envs (Device: one row per turn, ~8 turns) learn the
    action format in fewer tokens with small batches (4), since the plateau before the format is
    learnt lasts a number of optimizer steps, not of tokens (docs/design-notes.md)."""
    estimator: str = "turn_return"
    """A turn-level estimator (CREDIT.md): turn_return, gigpo, ..."""
    estimator_cfg: dict[str, Any] | None = None
    rl_steps: int = 60
    num_groups: int = 16
    """Task groups per RL round. Most groups are all-equal (about 60%: every episode fails), so 8
    groups left 3 informative ones per round and test success plateaued near 0.2; 16 doubled the
    gain per step (docs/design-notes.md, "Quickstart results")."""
    group_size: int = 8
    rl_lr: float = 1e-3
    rl_lr_schedule: str = "constant"
    """RL learning-rate schedule: constant, linear or cosine decay over the RL steps."""
    kl_coef: float = 0.0
    """KL-to-SFT-policy loss weight during RL (k3; 0 = off, which also lets all-zero-advantage rows skip)."""
    entropy_coef: float = 0.0
    max_new_tokens: int = 48
    n_eval: int = 400
    """Test-split tasks evaluated before and after RL (the same tasks both times; 400 puts the
    sampling noise of the before-after gain near 3 points sd, 200 near 4)."""
    eval_temperature: float = 1.0
    """Evaluate the sampling policy RL trains (0 would evaluate greedily)."""
    eval_seed: int = 12_345
    progress: bool = True
    topk: int = 1
    """Documents per search (the easy env's default is 3; one keeps contexts short on CPU)."""
    short_prompt: bool = True
    """Use the two-line instruction in trainers/data/quickstart_prompt.txt (shorter contexts)."""

    train_corpus: str = "episode"
    """Search corpus of the SFT and RL episodes: "shared" (the train split's fixed world) or "episode"
    (a fresh 40-entity world per task, so names cannot be memorized; evaluation always uses the test
    split's shared world)."""

    invalid_penalty: float = 0.0
    """Reward of a malformed reply in the SFT and RL episodes (the env's `invalid_penalty`; e.g. -0.1
    as verl-agent's invalid-action penalty, arXiv 2505.10978). Evaluation reward stays unshaped."""

    reward: str = "f1"
    """Env reward: "f1" (token F1 of the answer), "char_f1" (F1 of character bigrams: partial credit
    for a near-copy of a one-word name) or "em"; partial credit gives RL a signal before any exact
    match. Success stays exact match."""

    def __post_init__(self) -> None:
        check_finite_config(self)

    def train_env_kwargs(self) -> dict[str, Any]:
        """Env kwargs of the SFT and RL episodes (train split)."""
        kw = {**self.env_kwargs(), "split": "train", "corpus": self.train_corpus}
        if self.invalid_penalty:
            kw["invalid_penalty"] = self.invalid_penalty
        return kw

    def eval_kwargs(self) -> dict[str, Any]:
        """`trainers.evaluate.evaluate` kwargs: the test split's tasks, sampled as RL samples them."""
        return dict(n_eval=self.n_eval, seed=self.eval_seed, split="test", temperature=self.eval_temperature,
                    max_new_tokens=self.max_new_tokens, env_kwargs=self.env_kwargs())  # fmt: skip

    def rl_config(self, **overrides: Any) -> GRPOConfig:
        """The RL stage's `GRPOConfig` (fields of `overrides` win, e.g. `estimator=`, `seed=`, `steps=`)."""
        kw: dict[str, Any] = dict(
            estimator=self.estimator, estimator_cfg=dict(self.estimator_cfg or {}), steps=self.rl_steps,
            num_groups=self.num_groups, group_size=self.group_size, lr=self.rl_lr, lr_schedule=self.rl_lr_schedule,
            kl_coef=self.kl_coef, entropy_coef=self.entropy_coef, max_new_tokens=self.max_new_tokens,
            seed=self.seed, progress=False, env_kwargs=self.train_env_kwargs(),
        )  # fmt: skip
        kw.update(overrides)
        return GRPOConfig(**kw)

    def env_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"topk": self.topk, "reward": self.reward}
        if self.short_prompt:
            kw["prompt_path"] = str(Path(__file__).with_name("data") / "quickstart_prompt.txt")
        return kw


def tiny_policy(cfg: QuickstartConfig) -> HFPolicy:
    """The quickstart's tiny from-scratch model (width and depth from `cfg`, seeded by `cfg.seed`)."""
    h = cfg.hidden_size
    tcfg = tiny.TinyConfig(hidden_size=h, intermediate_size=3 * h, num_layers=cfg.num_layers, num_heads=4, num_kv_heads=2)
    return tiny.build(seed=cfg.seed, config=tcfg)


def _expert_episodes(cfg: QuickstartConfig, tokenizer: Any, env_kwargs: dict[str, Any]) -> list[Episode]:
    expert = ScriptedPolicy.for_env(cfg.env_id, tokenizer=tokenizer, epsilon=cfg.epsilon, seed=cfg.seed)
    col = Collector(expert, cfg.env_id, group_size=1, env_kwargs=env_kwargs,
                    sampling=Sampling(max_new_tokens=cfg.max_new_tokens))  # fmt: skip
    try:
        return col.collect(num_groups=cfg.expert_episodes, seed=cfg.seed * 1_000_003 + 1)
    finally:
        col.close()


def plot_reward_curve(history: list[dict[str, float]], before: float, after: float, path: Path) -> None:
    """RL reward and success per step, with the held-out success before and after RL."""
    import matplotlib  # plotting only: kept out of the import of the module

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = list(range(1, len(history) + 1))
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot(steps, [h.get("reward", float("nan")) for h in history], label="train reward", marker="o", ms=3)
    ax.plot(steps, [h.get("success", float("nan")) for h in history], label="train success", marker="s", ms=3)
    ax.axhline(before, color="grey", ls="--", label=f"test success before RL ({before:.2f})")
    ax.axhline(after, color="green", ls="--", label=f"test success after RL ({after:.2f})")
    ax.set_xlabel("RL step")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("creditgym quickstart")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _rounded(seconds: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in seconds.items()}


def warm_start(
    cfg: QuickstartConfig,
    out_dir: str | Path | None = None,
    env_kwargs: dict[str, Any] | None = None,
    policy: TrainablePolicy | None = None,
) -> tuple[TrainablePolicy, dict[str, Any]]:
    """Build the tiny model, run the induction warm-up and SFT it on the imperfect expert's episodes
    (written to `out_dir/expert_episodes.jsonl`, SFT logs to `out_dir/sft/`; None writes nothing).
    Returns the policy and a report: `induction` and `sft` metrics, `expert_success`, `stages_s`.

    The examples reuse it on other envs and models: `env_kwargs` replaces the Search-specific
    `cfg.train_env_kwargs()` of the expert's episodes, and `policy` (e.g. a pretrained model) replaces
    the tiny one built from `cfg`."""
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    timer = StageTimer()
    with timer("build_s"):
        policy = policy if policy is not None else tiny_policy(cfg)
    with timer("induction_s"):
        induction = induction_warmup(
            policy.model, policy.tokenizer, InductionConfig(steps=cfg.induction_steps, seed=cfg.seed, digit_fraction=cfg.induction_digit_fraction)
        )
    with timer("expert_s"):
        expert = _expert_episodes(cfg, policy.tokenizer, cfg.train_env_kwargs() if env_kwargs is None else env_kwargs)
        if out is not None:
            RolloutStore(out / "expert_episodes.jsonl", fsync=False).extend(expert)
    sft_cfg = SFTConfig(lr=cfg.sft_lr, epochs=cfg.sft_epochs, batch_episodes=cfg.sft_batch_episodes, warmup_steps=5,
                        seed=cfg.seed, lr_schedule=cfg.sft_lr_schedule,
                        out_dir=None if out is None else str(out / "sft"), progress=cfg.progress)  # fmt: skip
    with timer("sft_s"):
        sft_eps = [e for e in expert if episode_success(e) >= 1.0] if cfg.sft_successes_only else expert
        sft_summary = SFTTrainer(policy, sft_cfg, episodes=sft_eps).train()
    report = {
        "induction": induction,
        "sft": {"final_loss": sft_summary.get("loss"), "steps": sft_summary.get("steps"), "episodes": len(sft_eps),
                "expert_success": sum(map(episode_success, expert)) / max(len(expert), 1)},
        "stages_s": _rounded(timer.seconds),
    }  # fmt: skip
    return policy, report


def small_warm_start(
    env_id: str, env_kwargs: dict[str, Any], seed: int, hidden_size: int, num_layers: int, expert_episodes: int,
    sft_epochs: int, sft_model: str | Path | None = None, *, sft_lr: float = 1e-2, induction_steps: int = 0,
    sft_batch_episodes: int = 16, model: str = "tiny", device: str = "cpu", out_dir: str | Path | None = None,
) -> HFPolicy:
    """The examples' quick warm start: a tiny model (or the pretrained `model`, agents/pretrained.py),
    `induction_steps` of induction warm-up (0 = none), SFT at `sft_lr` on `expert_episodes` episodes
    of the scripted expert at epsilon 0.3 played with `env_kwargs`. `sft_model` loads a saved model
    (e.g. the quickstart's `sft_model/`, or an earlier run's `OUT_DIR/model`) instead. `out_dir`
    keeps the expert episodes, the SFT logs and the model (`out_dir/model`, for a later `sft_model`)."""
    if sft_model is not None:
        return HFPolicy.from_pretrained(sft_model, seed=seed).to(device)
    cfg = QuickstartConfig(env_id=env_id, seed=seed, hidden_size=hidden_size, num_layers=num_layers,
                           induction_steps=induction_steps, expert_episodes=expert_episodes, epsilon=0.3,
                           sft_epochs=sft_epochs, sft_lr=sft_lr, sft_batch_episodes=sft_batch_episodes,
                           progress=False)  # fmt: skip
    base = tiny_policy(cfg).to(device) if model == "tiny" else pretrained.load(model, device=device, seed=seed)
    warm_start(cfg, out_dir, env_kwargs=env_kwargs, policy=base)  # trains `base` in place
    if out_dir is not None:
        base.save(Path(out_dir) / "model")
    return base


def save_model(policy: TrainablePolicy, path: Path, cfg: QuickstartConfig) -> Path:
    """Save `policy` as a Hugging Face folder with the quickstart's evaluation as its
    `eval_config.json`, so `creditgym eval ENV_ID --model path` reproduces the reported number."""
    policy.save(path)
    kw = cfg.eval_kwargs()
    save_eval_config(path, cfg.env_id, env_kwargs=kw["env_kwargs"], n_eval=kw["n_eval"], seed=kw["seed"],
                     split=kw["split"], temperature=kw["temperature"], max_new_tokens=kw["max_new_tokens"])  # fmt: skip
    return path


def run_quickstart(out_dir: str | Path, config: QuickstartConfig | None = None) -> dict[str, Any]:
    """Run the quickstart into `out_dir`; returns the summary (also written to summary.json)."""
    cfg = config or QuickstartConfig()
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(int(cfg.threads), 1))
    torch.manual_seed(cfg.seed)
    policy, warm = warm_start(cfg, out)
    timer = StageTimer()
    eval_kw = cfg.eval_kwargs()
    with timer("save_s"):
        sft_dir = save_model(policy, out / "sft_model", cfg)
    with timer("eval_before_s"):
        before = evaluate(policy, cfg.env_id, **eval_kw)
        RolloutStore(out / "eval_before.jsonl", fsync=False).extend(before.episodes)
    rl_cfg = cfg.rl_config(out_dir=str(out), progress=cfg.progress)
    with timer("rl_s"):
        with GRPOTrainer(policy, cfg.env_id, rl_cfg) as rl:
            rl_summary = rl.train()
    with timer("eval_after_s"):
        after = evaluate(policy, cfg.env_id, **eval_kw)
        RolloutStore(out / "eval_after.jsonl", fsync=False).extend(after.episodes)
    with timer("save_s"):
        final_dir = save_model(policy, out / "final_model", cfg)
    seconds = time.perf_counter() - t0
    plot_reward_curve(rl.history, before.success, after.success, out / "reward_curve.png")
    summary = {
        "before": {"success": before.success, "reward": before.reward},
        "after": {"success": after.success, "reward": after.reward},
        "seed": cfg.seed,
        "seconds": round(seconds, 2),
        "split": "test",
        "n_eval": cfg.n_eval,
        "env_id": cfg.env_id,
        "estimator": cfg.estimator,
        "eval_temperature": cfg.eval_temperature,
        "stages_s": {**warm["stages_s"], **_rounded(timer.seconds)},
        "induction": warm["induction"],
        "sft": warm["sft"],
        "rl": {"steps": rl_summary.get("steps"), "skipped_steps": rl_summary.get("skipped_steps"),
               "final_train_success": rl_summary.get("success")},
        "sft_model": str(sft_dir),
        "final_model": str(final_dir),
        "config": asdict(cfg),
    }  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
