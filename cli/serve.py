"""`creditgym serve MODEL_DIR [--host H] [--port P] [--model-name NAME]`: an OpenAI-compatible server."""

from __future__ import annotations

import logging
import threading

import typer
from rich.console import Console

from creditgym.cli.eval import load_policy
from creditgym.integrations.serve import start_server

app = typer.Typer()


@app.command("serve")
def serve_command(
    model_dir: str = typer.Argument(
        ..., help="a saved Hugging Face folder (or 'tiny', or a pretrained name)"
    ),
    host: str = typer.Option("127.0.0.1", help="address to bind (0.0.0.0 serves other machines)"),
    port: int = typer.Option(8000, help="port to bind (0: any free port, printed at start)"),
    model_name: str = typer.Option(None, help="the name requests give as `model` [the folder's name]"),
    seed: int = typer.Option(0, help="seed of the sampler used by requests without a seed"),
) -> None:
    """Serve a checkpoint over the OpenAI API (completions, chat, models) with exact token ids and
    logprobs, and vLLM's weight-sync endpoints (load/unload LoRA adapters, reload full weights):
    the CPU stand-in for a vLLM server, docs/scale.md. Runs until interrupted (Ctrl-C)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    policy = load_policy(model_dir, seed)
    server = start_server(policy, host=host, port=port, model_name=model_name)
    Console().print(f"serving {server.model_name} at {server.url}", highlight=False)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
