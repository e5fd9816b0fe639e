"""`creditgym train`, `creditgym eval` and `creditgym quickstart` (registered by core/cli.py).

Nothing heavy is imported at module level: `creditgym --help` must stay fast. `train` takes one
`--field-name VALUE` flag per field of the chosen trainer's Config dataclass (`--flag/--no-flag` for
booleans, JSON for dicts, lists and tuples); `creditgym train --list-flags` prints them with their docs.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import json
import textwrap
from pathlib import Path
from typing import Any

import typer

__all__ = ["config_flags", "eval_settings", "parse_config_flags", "register"]

TRAINERS = {
    "grpo": ("creditgym.trainers.grpo", "GRPOTrainer", "GRPOConfig"),
    "ppo": ("creditgym.trainers.ppo", "PPOTrainer", "PPOConfig"),
    "sft": ("creditgym.trainers.sft", "SFTTrainer", "SFTConfig"),
}

# Difficulty presets per env family (ENVS.md "Difficulty"): label -> env kwargs.
DIFFICULTIES: dict[str, dict[str, dict[str, Any]]] = {
    "creditgym/Search": {"easy": {"hops": [1, 1], "distractors": 0}, "medium": {"hops": [2, 2]}, "hard": {"hops": [3, 3]}},
    "creditgym/SelfSearch": {"easy": {"hops": [1, 1]}, "medium": {"hops": [2, 2]}, "hard": {"hops": [3, 3]}},
    "creditgym/Tools": {"easy": {"difficulty": 1}, "medium": {"difficulty": 2}, "hard": {"difficulty": 3}},
    "creditgym/Device": {"easy": {"difficulty": 1}, "medium": {"difficulty": 2}, "hard": {"difficulty": 3}},
}


def _import(module: str, name: str) -> Any:
    import importlib

    return getattr(importlib.import_module(module), name)


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal right after each field) of a dataclass and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in itertools.pairwise(body):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                    docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def config_flags(cls: type) -> list[tuple[str, str, Any, str]]:
    """(flag, type, default, doc) for every field of a Config dataclass."""
    docs = field_docs(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        )
        out.append(("--" + f.name.replace("_", "-"), str(f.type), default, docs.get(f.name, "")))
    return out


def _coerce(type_str: str, raw: str) -> Any:
    t = type_str.replace(" ", "")
    if raw.lower() in ("none", "null") and "None" in t:
        return None
    base = t.replace("|None", "").replace("None|", "")
    if base == "bool":
        return raw.lower() in ("1", "true", "yes", "on")
    if base == "int":
        return int(raw)
    if base == "float":
        return float(raw)
    if base == "str":
        return raw
    value = json.loads(raw)
    return tuple(value) if base.startswith("tuple") else value


def parse_config_flags(cls: type, args: list[str]) -> Any:
    """Build `cls(**fields)` from `--field-name VALUE` / `--flag` / `--no-flag` arguments."""
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    kw: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise typer.BadParameter(f"unexpected argument {arg!r}; config flags look like --field-name VALUE")
        name, value = arg[2:], None
        if "=" in name:
            name, value = name.split("=", 1)
        name = name.replace("-", "_")
        if name.startswith("no_") and types.get(name[3:], "").replace(" ", "") == "bool":
            kw[name[3:]] = False
            i += 1
            continue
        if name not in types:
            known = ", ".join("--" + n.replace("_", "-") for n in types)
            raise typer.BadParameter(f"unknown flag --{name.replace('_', '-')} for {cls.__name__}; known: {known}")
        if value is None and types[name].replace(" ", "") == "bool":
            kw[name] = True
            i += 1
            continue
        if value is None:
            if i + 1 >= len(args):
                raise typer.BadParameter(f"--{name.replace('_', '-')} needs a value")
            value = args[i + 1]
            i += 1
        kw[name] = _coerce(types[name], value)
        i += 1
    return cls(**kw)


def _load_policy(model: str, seed: int) -> Any:
    if model == "tiny":
        from creditgym.agents import tiny

        return tiny.build(seed=seed)
    if Path(model).is_dir():
        from creditgym.agents.hf import HFPolicy

        return HFPolicy.from_pretrained(model, seed=seed)
    from creditgym.agents import pretrained

    return pretrained.load(model)


def _difficulties(env_id: str, names: str | None) -> dict[str, dict[str, Any]] | None:
    if not names:
        return None
    family = next((v for k, v in DIFFICULTIES.items() if env_id.startswith(k)), None)
    if family is None:
        raise typer.BadParameter(f"no difficulty presets for {env_id}; known families: {sorted(DIFFICULTIES)}")
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in family]
    if unknown:
        raise typer.BadParameter(f"unknown difficulties {unknown}; choose from {sorted(family)}")
    return {n: family[n] for n in wanted}


EVAL_DEFAULTS: dict[str, Any] = {"n_eval": 64, "seed": 12_345, "split": "test", "temperature": 1.0, "max_new_tokens": 64}


def eval_settings(model: str | None, env_id: str, given: dict[str, Any], env_kwargs_json: str | None) -> dict[str, Any]:
    """`evaluate` kwargs of `creditgym eval`: the flags given, else the model folder's eval_config.json
    (when written for this env), else EVAL_DEFAULTS. A model folder without an eval config (or with
    one for another env) needs `--env-kwargs`, since the numbers depend on them."""
    from creditgym.trainers.evaluate import EVAL_CONFIG, load_eval_config

    saved = load_eval_config(model) if model is not None and Path(model).is_dir() else None
    if saved is not None and saved["env_id"] != env_id:
        if env_kwargs_json is None:
            raise typer.BadParameter(
                f"{model}/{EVAL_CONFIG} was written for {saved['env_id']}, not {env_id}: pass this env's kwargs "
                "with --env-kwargs '{...}' ('{}' for its defaults), or evaluate " + saved["env_id"]
            )
        saved = None
    if saved is None and model is not None and Path(model).is_dir() and env_kwargs_json is None:
        raise typer.BadParameter(
            f"model folder {model} has no {EVAL_CONFIG}, so the env settings it was measured with are unknown: "
            "pass them with --env-kwargs '{...}' ('{}' for the env's defaults), plus --n-eval, --seed, --split, "
            "--temperature and --max-new-tokens where they differ from the defaults"
        )
    base = {**EVAL_DEFAULTS, **{k: saved[k] for k in EVAL_DEFAULTS}} if saved else dict(EVAL_DEFAULTS)
    out = {k: (v if v is not None else base[k]) for k, v in given.items()}
    if env_kwargs_json is not None:
        from creditgym.cli import json_object_option

        out["env_kwargs"] = json_object_option(env_kwargs_json)
    else:
        out["env_kwargs"] = dict(saved["env_kwargs"]) if saved else {}
    return out


def register(app: typer.Typer) -> None:
    """Add `train`, `eval` and `quickstart` to the main app."""

    @app.command("quickstart")
    def quickstart_command(
        out: Path = typer.Option(Path("quickstart_out"), "--out", help="output folder"),
        seed: int = typer.Option(0, help="seed of the model, data and RL"),
        threads: int = typer.Option(2, help="torch CPU threads"),
        rl_steps: int = typer.Option(None, help="override the RL budget (rounds)"),
        progress: bool = typer.Option(True, help="show progress bars"),
    ) -> None:
        """SFT warm start, then RL with a turn-level estimator on creditgym/SearchEasy-v0, fully offline:
        prints held-out success before and after RL and writes DIR/summary.json."""
        from rich.console import Console

        from creditgym.trainers.quickstart import QuickstartConfig, run_quickstart

        cfg = QuickstartConfig(seed=seed, threads=threads, progress=progress)
        if rl_steps is not None:
            cfg.rl_steps = rl_steps
        s = run_quickstart(out, cfg)
        from rich.table import Table

        table = Table(title=f"creditgym quickstart — {cfg.env_id}, {s['split']} split, n={s['n_eval']}")
        for col in ("stage", "test success", "test reward"):
            table.add_column(col)
        table.add_row("after SFT warm start (before RL)", f"{s['before']['success']:.3f}", f"{s['before']['reward']:.3f}")
        table.add_row(f"after RL ({cfg.estimator})", f"{s['after']['success']:.3f}", f"{s['after']['reward']:.3f}")
        Console().print(table)
        typer.echo(f"{s['seconds']:.0f} s; wrote {out / 'summary.json'}, episodes.jsonl, reward_curve.png and the "
                   f"models {s['sft_model']}, {s['final_model']} (evaluate: creditgym eval {cfg.env_id} --model "
                   f"{s['final_model']})")  # fmt: skip

    @app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def train_command(
        ctx: typer.Context,
        env_id: str = typer.Argument(None, help="env id (or FILE.py:ID / module:ID)"),
        trainer: str = typer.Option("grpo", help="grpo, ppo or sft"),
        model: str = typer.Option("tiny", help="'tiny', a local HF model folder, or a pretrained name"),
        seed: int = typer.Option(0, help="model seed (tiny)"),
        save: Path = typer.Option(None, help="save the trained model here"),
        list_flags: bool = typer.Option(False, "--list-flags", help="print the trainer's config flags and exit"),
    ) -> None:
        """Train a policy: flags after the options are the Config dataclass fields (see --list-flags)."""
        if trainer not in TRAINERS:
            raise typer.BadParameter(f"unknown trainer {trainer!r}; choose one of {sorted(TRAINERS)}")
        module, tname, cname = TRAINERS[trainer]
        cfg_cls = _import(module, cname)
        if list_flags:
            for flag, typ, default, doc in config_flags(cfg_cls):
                typer.echo(f"{flag:32s} {typ:22s} default={default!r}\n{'':34s}{doc}")
            raise typer.Exit(0)
        if env_id is None:
            raise typer.BadParameter("train needs an ENV_ID")
        from creditgym.cli import import_env_source

        env_id = import_env_source(env_id)
        cfg = parse_config_flags(cfg_cls, list(ctx.args))
        policy = _load_policy(model, seed)
        cls = _import(module, tname)
        if trainer == "sft":
            episodes = None
            if cfg.rft_n <= 0:  # plain SFT on the scripted expert; RFT samples its own episodes from env_id
                from creditgym.agents.offline import expert_episodes

                episodes = expert_episodes(env_id, 64, seed=cfg.seed, tokenizer=policy.tokenizer,
                                           env_kwargs=cfg.env_kwargs)  # fmt: skip
            summary = cls(policy, cfg, episodes=episodes, env_id=env_id).train()
        else:
            summary = cls(policy, env_id, cfg).train()
        typer.echo(json.dumps(summary, indent=1))
        if save is not None:
            from creditgym.trainers.evaluate import save_eval_config

            policy.save(save)
            eval_kw = {k: v for k, v in dataclasses.asdict(cfg).items() if k in ("temperature", "max_new_tokens")}
            save_eval_config(save, env_id, env_kwargs=cfg.env_kwargs, **{**EVAL_DEFAULTS, **eval_kw, "split": "test"})
            typer.echo(f"saved the model to {save} (with its eval_config.json: the test split, {env_id})")

    @app.command("eval")
    def eval_command(
        env_id: str = typer.Argument(..., help="env id (or FILE.py:ID / module:ID)"),
        model: str = typer.Option("tiny", help="'tiny', a local HF model folder, or a pretrained name"),
        n_eval: int = typer.Option(None, help="episodes (test-split seeds) per difficulty [model's eval config, else 64]"),
        seed: int = typer.Option(None, help="seed of the evaluated tasks [model's eval config, else 12345]"),
        split: str = typer.Option(None, help="env split [model's eval config, else test]"),
        temperature: float = typer.Option(None, help="sampling temperature, 0 = greedy [model's eval config, else 1.0]"),
        max_new_tokens: int = typer.Option(None, help="tokens per action [model's eval config, else 64]"),
        env_kwargs: str = typer.Option(None, help="env kwargs as JSON [model's eval config, else {}]"),
        difficulties: str = typer.Option(None, help="comma list, e.g. easy,medium,hard (family presets)"),
        scripted: bool = typer.Option(False, help="evaluate the env's scripted expert instead of a model"),
        json_out: Path = typer.Option(None, help="also write the results as JSON"),
        history: str = typer.Option(None, help="full, window or window:K (default: the env's own)"),
        max_context_tokens: int = typer.Option(None, help="context budget (default: the model's context length)"),
    ) -> None:
        """Success and reward per difficulty on test-split seeds, as a table."""
        from rich.console import Console

        from creditgym.cli import import_env_source
        from creditgym.trainers.evaluate import evaluate, format_table

        env_id = import_env_source(env_id)
        if scripted:
            from creditgym.agents import ScriptedPolicy

            policy: Any = ScriptedPolicy.for_env(env_id)
        else:
            policy = _load_policy(model, 0)
        given = {"n_eval": n_eval, "seed": seed, "split": split, "temperature": temperature,
                 "max_new_tokens": max_new_tokens}  # fmt: skip
        settings = eval_settings(None if scripted else model, env_id, given, env_kwargs)
        res = evaluate(policy, env_id, **settings, categories=_difficulties(env_id, difficulties),
                       history=history, max_context_tokens=max_context_tokens)  # fmt: skip
        Console().print(format_table([(model if not scripted else "scripted", res)], title=f"{env_id} — held-out"))
        if json_out is not None:
            json_out.write_text(json.dumps(res.to_dict(), indent=2))
