"""`creditgym eval ENV_ID [--model M | --scripted] [--difficulties easy,medium,hard]`: held-out success."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from creditgym.agents import ScriptedPolicy, pretrained, tiny
from creditgym.agents.hf import HFPolicy
from creditgym.cli.options import env_source, json_object_option
from creditgym.envs import difficulty_presets
from creditgym.trainers.evaluate import EVAL_CONFIG, evaluate, format_table, load_eval_config

EVAL_DEFAULTS: dict[str, Any] = {"n_eval": 64, "seed": 12_345, "split": "test", "temperature": 1.0, "max_new_tokens": 64}


def load_policy(model: str, seed: int) -> Any:
    """`tiny` (built with `seed`), a local Hugging Face folder, or a pretrained name."""
    if model == "tiny":
        return tiny.build(seed=seed)
    if Path(model).is_dir():
        return HFPolicy.from_pretrained(model, seed=seed)
    return pretrained.load(model)


def eval_settings(model: str | None, env_id: str, given: dict[str, Any], env_kwargs_json: str | None) -> dict[str, Any]:
    """`evaluate` kwargs of `creditgym eval`: the flags given, else the model folder's eval_config.json
    (when written for this env), else EVAL_DEFAULTS. A model folder without an eval config (or with
    one for another env) needs `--env-kwargs`, since the numbers depend on them."""
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
        out["env_kwargs"] = json_object_option(env_kwargs_json)
    else:
        out["env_kwargs"] = dict(saved["env_kwargs"]) if saved else {}
    return out


def _difficulties(env_id: str, names: str | None) -> dict[str, dict[str, Any]] | None:
    if not names:
        return None
    try:
        family = difficulty_presets(env_id)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in family]
    if unknown:
        raise typer.BadParameter(f"unknown difficulties {unknown}; choose from {sorted(family)}")
    return {n: family[n] for n in wanted}


app = typer.Typer()


@app.command("eval")
def eval_command(
    env_id: str = typer.Argument(..., help="env id (or FILE.py:ID / module:ID)", callback=env_source),
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
    samples: int = typer.Option(1, help="samples per task; > 1 also reports maj@n (TTRL: 16 at temperature 0.6)"),
    pass_k: str = typer.Option("1", help="comma list of k for pass@k (k <= samples), e.g. 1,4,16"),
) -> None:
    """Success and reward per difficulty on test-split seeds, as a table; pass@k, maj@n and tool
    productivity (envs that count tool calls) below it."""
    policy: Any = ScriptedPolicy.for_env(env_id) if scripted else load_policy(model, 0)
    given = {"n_eval": n_eval, "seed": seed, "split": split, "temperature": temperature, "max_new_tokens": max_new_tokens}
    settings = eval_settings(None if scripted else model, env_id, given, env_kwargs)
    try:
        ks = [int(k) for k in pass_k.split(",") if k.strip()]
    except ValueError as e:
        raise typer.BadParameter(f"--pass-k takes a comma list of integers like 1,4,16, got {pass_k!r}") from e
    if samples < 1 or any(not 0 < k <= samples for k in ks):
        raise typer.BadParameter(f"need --samples >= 1 and every --pass-k in 1..samples; got samples={samples}, k={ks}")
    res = evaluate(policy, env_id, **settings, categories=_difficulties(env_id, difficulties),
                   history=history, max_context_tokens=max_context_tokens, samples=samples, pass_k=ks)  # fmt: skip
    console = Console()
    console.print(format_table([(model if not scripted else "scripted", res)], title=f"{env_id} — held-out"))
    if res.metrics:
        console.print("  ".join(f"{k} {v:.3f}" for k, v in res.metrics.items()))
    if json_out is not None:
        json_out.write_text(json.dumps(res.to_dict(), indent=2))
