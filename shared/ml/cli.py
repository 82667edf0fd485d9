"""`studio models ...`: list the manifest and pull its weights."""

from pathlib import Path

import typer

from shared.ml import registry
from shared.ml.pull import pull_models

models_app = typer.Typer(help="The model manifest: list models, pull and verify their weights.")


@models_app.command("list")
def list_models() -> None:
    """Every model of the manifest, its licence, size and whether its files are present."""
    root = registry.model_dir()
    for name, spec in sorted(registry.manifest().models.items()):
        paths = [p for f in spec.files for p in (f.path, f.converted_path) if p]
        present = all((root / name / p).exists() for p in paths)
        typer.echo(
            f"{name:22} {spec.kind:11} {spec.size_mb:>7.0f} MB  "
            f"{'present' if present else 'missing':8} {spec.licence}"
        )


@models_app.command("pull")
def pull(
    names: list[str] = typer.Argument(None, help="model names (default: every default model)"),
    all_models: bool = typer.Option(False, "--all", help="pull every model of the manifest"),
    dest: Path = typer.Option(None, help="target folder (default: settings.model_dir)"),
    accept_new: list[str] = typer.Option(
        None,
        "--accept-new",
        metavar="NAME",
        help="fetch NAME again and accept bytes that differ from its recorded pin (repeatable)",
    ),
) -> None:
    """Download and verify model weights (published hashes, else the pins of earlier pulls)."""
    m = registry.manifest()
    accept_new = accept_new or []
    if all_models:
        names = sorted(m.models)
    elif not names:
        names = accept_new or sorted({*m.defaults.values()})
    names = [*names, *(n for n in accept_new if n not in names)]
    try:
        for name, folder in pull_models(names, dest, accept_new=accept_new).items():
            typer.echo(f"{name}: ok ({folder})")
    except registry.ModelError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
