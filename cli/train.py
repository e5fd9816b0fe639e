"""`creditgym train ENV_ID --trainer grpo|ppo|sft|digirl|digiq [--model M] [--save DIR] [CONFIG FLAGS]`.

The config flags are the fields of the trainer's Config dataclass, parsed by tyro (as CleanRL's
scripts do): `--field-name VALUE` or `--field-name=VALUE`, `--flag` / `--no-flag` for booleans, JSON for
dict, list and tuple fields (`--env-kwargs '{"hops": [3, 3]}'`), `None` (or `none`, `null`) for an
optional field. `--list-flags` prints them with their docstrings.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

import typer
import tyro

from creditgym.agents.offline import collect_offline, expert_episodes
from creditgym.cli.eval import EVAL_DEFAULTS, load_policy
from creditgym.cli.options import env_source
from creditgym.trainers import (
    DigiQConfig,
    DigiQTrainer,
    DigiRLConfig,
    DigiRLTrainer,
    GRPOConfig,
    GRPOTrainer,
    PPOConfig,
    PPOTrainer,
    SFTConfig,
    SFTTrainer,
)  # fmt: skip
from creditgym.trainers.evaluate import save_eval_config
from creditgym.trainers.flags import CONFIG_FLAGS
from creditgym.viewer import write_report

C = TypeVar("C")

TRAINERS: dict[str, tuple[Any, Any]] = {
    "grpo": (GRPOTrainer, GRPOConfig),
    "ppo": (PPOTrainer, PPOConfig),
    "sft": (SFTTrainer, SFTConfig),
    "digirl": (DigiRLTrainer, DigiRLConfig),
    "digiq": (DigiQTrainer, DigiQConfig),
}

def config_from_flags(cls: type[C], args: list[str], prog: str = "creditgym train") -> C:
    """Build `cls` from its `--field-name VALUE` flags (tyro); `--help` in `args` prints them and exits."""
    parsed: tuple[C, list[str]] = tyro.cli(cls, args=args, prog=prog, registry=CONFIG_FLAGS, return_unknown_args=True)
    cfg, unknown = parsed
    if unknown:
        raise typer.BadParameter(f"unknown flag {' '.join(unknown)} for {cls.__name__}; see `{prog} --list-flags`")
    return cfg


app = typer.Typer()


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    env_id: str = typer.Argument(None, help="env id (or FILE.py:ID / module:ID)", callback=env_source),
    trainer: str = typer.Option("grpo", help="grpo, ppo, sft, digirl or digiq"),
    model: str = typer.Option("tiny", help="'tiny', a local HF model folder, or a pretrained name"),
    seed: int = typer.Option(0, help="model seed (tiny)"),
    save: Path = typer.Option(None, help="save the trained model here"),
    list_flags: bool = typer.Option(False, "--list-flags", help="print the trainer's config flags and exit"),
    report: Path = typer.Option(None, help="also write the run's per-token credit report (creditgym view) here (grpo/ppo; needs --out-dir)"),
) -> None:
    """Train a policy: flags after the options are the Config dataclass fields (see --list-flags)."""
    if trainer not in TRAINERS:
        raise typer.BadParameter(f"unknown trainer {trainer!r}; choose one of {sorted(TRAINERS)}")
    trainer_cls, cfg_cls = TRAINERS[trainer]
    prog = f"creditgym train --trainer {trainer}"
    if list_flags:
        config_from_flags(cfg_cls, ["--help"], prog)
    if env_id is None:
        raise typer.BadParameter("train needs an ENV_ID")
    cfg = config_from_flags(cfg_cls, list(ctx.args), prog)
    if report is not None and (trainer not in ("grpo", "ppo") or cfg.out_dir is None):
        raise typer.BadParameter("--report needs --trainer grpo or ppo and --out-dir DIR (the report reads DIR/episodes.jsonl)")
    policy = load_policy(model, seed)
    if trainer == "sft":
        episodes = None
        if cfg.rft_n <= 0:  # plain SFT on the scripted expert; RFT samples its own episodes from env_id
            episodes = expert_episodes(env_id, 64, seed=cfg.seed, tokenizer=policy.tokenizer, env_kwargs=cfg.env_kwargs)
        summary = trainer_cls(policy, cfg, episodes=episodes, env_id=env_id).train()
    elif trainer in ("digirl", "digiq"):  # offline data: expert, noisy expert and random episodes (METHODS.md 6-7)
        offline = collect_offline(env_id, tokenizer=policy.tokenizer, env_kwargs=cfg.env_kwargs, seed=cfg.seed)
        summary = trainer_cls(policy, env_id, cfg, episodes=offline).train()
    else:
        summary = trainer_cls(policy, env_id, cfg).train()
    typer.echo(json.dumps(summary, indent=1))
    if report is not None:
        write_report(cfg.out_dir, report, estimator=cfg.estimator, cfg=cfg.estimator_cfg, tokenizer=policy.tokenizer)
        typer.echo(f"wrote the credit report {report}")
    if save is not None:
        policy.save(save)
        eval_kw = {k: v for k, v in dataclasses.asdict(cfg).items() if k in ("temperature", "max_new_tokens")}
        save_eval_config(save, env_id, env_kwargs=cfg.env_kwargs, **{**EVAL_DEFAULTS, **eval_kw, "split": "test"})
        typer.echo(f"saved the model to {save} (with its eval_config.json: the test split, {env_id})")
