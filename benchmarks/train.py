"""`creditgym bench train`: creditgym's GRPOTrainer side by side with TRL's GRPOTrainer.

Same from-scratch tiny Qwen2 model and tokenizer files for both, a single-turn arithmetic task
("What is A+B?", reward 1 for the right number), 64 completions per step in groups of 8, 32 new
tokens, fp32, 2 threads, one generation and one optimizer step per step. Each side runs in its own
process (so peak memory is its own); the table gives seconds per step, generated tokens per second,
peak RSS, the ratio, and where creditgym's time goes per stage. TRL comes from the `bench` extra.
Not a timed test: run it by hand.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import re
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch
import typer
from rich.console import Console
from rich.table import Table

from creditgym.agents import tiny
from creditgym.agents.hf import HFPolicy
from creditgym.envs.base import Invalid, Outcome, Parsed, Task, TextEnv
from creditgym.trainers.grpo import GRPOConfig, GRPOTrainer

__all__ = ["ARITH_ENV_ID", "ArithEnv", "arith_question", "arith_reward", "main", "run_creditgym"]

ARITH_ENV_ID = "creditgym-bench/Arith-v0"


def arith_question(seed: int) -> tuple[str, int]:
    rng = np.random.default_rng(seed)
    a, b = (int(x) for x in rng.integers(0, 50, size=2))
    return f"What is {a}+{b}?", a + b


def arith_reward(text: str, answer: int) -> float:
    m = re.search(r"-?\d+", text)
    return 1.0 if m is not None and int(m.group(0)) == answer else 0.0


class ArithEnv(TextEnv):
    """One question "What is A+B?"; reward 1 when the first number of the reply is A+B."""

    metadata = {**TextEnv.metadata, "obs_role": "user", "stop": ()}

    def __init__(self, split: str = "train", **kw: Any):
        super().__init__(max_turns=1, split=split, **kw)

    def _new_task(self, rng: np.random.Generator, options: Any) -> Task:
        n = int(rng.integers(0, 2**31 - 1))
        q, ans = arith_question(n)
        return Task(f"arith/{self.split}/{n}", self.split, gold=(str(ans),), private={"q": q, "ans": ans})

    def _first_obs(self) -> str:
        assert self.task is not None
        return str(self.task.private["q"])

    def _parse(self, action: str) -> Parsed | Invalid:
        return Parsed("answer", {"text": action}, action)

    def _apply(self, parsed: Parsed) -> Outcome:
        assert self.task is not None
        r = arith_reward(parsed.args["text"], int(self.task.private["ans"]))
        return Outcome("done", reward=r, terminated=True)

    def _state_key(self) -> str:
        return f"{self.task.task_id if self.task else ''}|{self.turn}"

    def _final_components(self) -> dict[str, float]:
        return {"success": float(self.episode_return > 0)}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_creditgym(model_dir: str, steps: int, threads: int, q: Any, skip_zero_adv_rows: bool = True) -> None:
    torch.set_num_threads(threads)
    if ARITH_ENV_ID not in gymnasium.registry:
        gymnasium.register(ARITH_ENV_ID, entry_point=ArithEnv)
    policy = HFPolicy.from_pretrained(model_dir, seed=0, max_batch_size=64)
    cfg = GRPOConfig(estimator="grpo", steps=steps, num_groups=8, group_size=8, max_new_tokens=32, lr=1e-5,
                     temperature=1.0, tensorboard=False, progress=False, loss_agg="token-mean",
                     skip_zero_adv_rows=skip_zero_adv_rows)  # fmt: skip
    tr = GRPOTrainer(policy, ARITH_ENV_ID, cfg)
    tr.step()  # warm-up round, not timed
    t0 = time.perf_counter()
    tokens = 0.0
    stages: dict[str, float] = {}
    for _ in range(steps):
        m = tr.step()
        tokens += m.get("action_tokens", 0.0)
        for k, v in m.items():
            if k.startswith("time/"):
                stages[k] = stages.get(k, 0.0) + v
    dt = time.perf_counter() - t0
    q.put({"name": "creditgym", "s_per_step": dt / steps, "tokens_per_s": tokens / dt, "peak_rss_mb": _peak_rss_mb(),
           "stages_s_per_step": {k: v / steps for k, v in stages.items()}})  # fmt: skip


def _run_trl(model_dir: str, steps: int, threads: int, q: Any) -> None:
    torch.set_num_threads(threads)
    try:
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
        from trl import GRPOConfig as TRLGRPOConfig
        from trl import GRPOTrainer as TRLGRPOTrainer
    except ImportError as e:
        q.put({"name": "trl", "error": f"TRL is not installed: pip install 'creditgym[bench]' ({e})"})
        return
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    rows = [arith_question(i) for i in range(64 * (steps + 2))]
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": qq}], "answer": a} for qq, a in rows])

    def reward(completions: list[Any], answer: list[int], **_: Any) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        return [arith_reward(t, int(a)) for t, a in zip(texts, answer)]

    times: list[float] = []
    tokens: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            times.append(time.perf_counter())

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "completions/mean_length" in logs:
                tokens.append(float(logs["completions/mean_length"]) * 64)

    with tempfile.TemporaryDirectory() as out:
        cfg = TRLGRPOConfig(output_dir=out, per_device_train_batch_size=64, num_generations=8, max_completion_length=32,
                         gradient_accumulation_steps=1, steps_per_generation=1, num_iterations=1, max_steps=steps + 1,
                         learning_rate=1e-5, beta=0.0, use_cpu=True, bf16=False, fp16=False, report_to=[],
                         logging_steps=1, save_strategy="no", temperature=1.0, dataloader_num_workers=0,
                         loss_type="dapo", seed=0, gradient_checkpointing=False)  # fmt: skip
        trainer = TRLGRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=ds, processing_class=tok,
                              callbacks=[Clock()])  # fmt: skip
        trainer.train()
    end = time.perf_counter()
    dt = end - times[1] if len(times) > 1 else float("nan")  # the first step is the untimed warm-up
    n_tok = sum(tokens[1:]) if len(tokens) > 1 else float("nan")
    q.put({"name": "trl", "s_per_step": dt / steps, "tokens_per_s": n_tok / dt, "peak_rss_mb": _peak_rss_mb()})


def _side(fn: Any, model_dir: str, steps: int, threads: int, *extra: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=fn, args=(model_dir, steps, threads, q, *extra))
    p.start()
    p.join()
    return q.get() if not q.empty() else {"error": f"{fn.__name__} exited with code {p.exitcode}"}


def main(
    steps: int = typer.Option(30, help="timed steps per side (after one warm-up step)"),
    threads: int = typer.Option(2, help="torch threads per side"),
    json_out: Path = typer.Option(None, help="also write the results as JSON"),
    skip_trl: bool = typer.Option(False, help="run only creditgym's side"),
    skip_zero_adv: bool = typer.Option(
        True, help="creditgym leaves all-equal groups out of the update passes (same gradient; TRL computes them)"
    ),
) -> None:
    """Time creditgym's GRPOTrainer and TRL's on the same model, task and settings."""
    with tempfile.TemporaryDirectory() as tmp:
        policy = tiny.build(seed=0)
        model_dir = str(policy.save(Path(tmp) / "model"))
        ours = _side(run_creditgym, model_dir, steps, threads, skip_zero_adv)
        theirs: dict[str, Any] = {"name": "trl"} if skip_trl else _side(_run_trl, model_dir, steps, threads)
    table = Table(title=f"GRPO side by side: 64 completions/step (8 x 8), 32 new tokens, fp32, {threads} threads, {steps} steps")
    for col in ("trainer", "s / step", "gen tokens / s", "peak RSS MB"):
        table.add_column(col)
    for r in (ours, theirs):
        if "s_per_step" in r:
            table.add_row(r["name"], f"{r['s_per_step']:.2f}", f"{r['tokens_per_s']:.1f}", f"{r['peak_rss_mb']:.0f}")
        else:
            table.add_row(r.get("name", "?"), "-", "-", r.get("error", "skipped"))
    console = Console()
    console.print(table)
    if "tokens_per_s" in ours and "tokens_per_s" in theirs:
        console.print(f"creditgym / TRL tokens/s ratio: {ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x")
    if "stages_s_per_step" in ours:
        console.print("creditgym seconds per step by stage: " + ", ".join(f"{k[5:-2]} {v:.2f}" for k, v in ours["stages_s_per_step"].items()))
    if json_out is not None:
        json_out.write_text(json.dumps({"creditgym": ours, "trl": theirs}, indent=2))
