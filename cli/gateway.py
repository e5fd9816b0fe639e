"""`creditgym gateway --upstream URL [--host H] [--port P] [--out DIR]`: record any outside agent."""

from __future__ import annotations

import logging
import threading

import typer

from creditgym.integrations.gateway import Gateway

app = typer.Typer()


@app.command("gateway")
def gateway_command(
    upstream: str = typer.Option(
        ..., help="base URL of the OpenAI-compatible server to forward to (http://host:port/v1)"
    ),
    host: str = typer.Option("127.0.0.1", help="address to bind (0.0.0.0 serves other machines)"),
    port: int = typer.Option(8100, help="port to bind (0: any free port, printed at start)"),
    out: str = typer.Option(
        None, "--out", help="directory whose episodes.jsonl receives each finished session"
    ),
    max_retries: int = typer.Option(3, help="retries of an upstream fault before the client gets an error"),
) -> None:
    """Run the gateway: an agent points its OpenAI client at URL/s/<session_id>/v1, posts its reward to
    URL/s/<session_id>/reward {"reward": x}, and the session is written to --out as a creditgym Episode
    (docs/scale.md, "Gateway"). Runs until interrupted (Ctrl-C)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        gw = Gateway(upstream, host=host, port=port, out_dir=out, max_retries=max_retries)
    except (ValueError, OSError) as e:
        typer.echo(f"gateway: {e}", err=True)
        raise typer.Exit(2) from e
    where = f", episodes to {gw.store.path}" if gw.store is not None else " (no --out: episodes are not kept)"
    typer.echo(f"gateway at {gw.url}/s/<session_id>/v1 -> {gw.upstream_url}{where}")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        gw.close()
