"""`axw`: the axwarehouse command line. One command per stage; each delegates to a function in ``stages/``.

Errors the user can fix (AxwError) print one line ``error: …`` and exit 2. Stage modules are imported inside the
commands so that ``axw sql`` does not pay for importing torch.
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import click
import typer

from axwarehouse.errors import AxwError

app = typer.Typer(
    name="axw",
    help="AxBench as a DuckDB/Parquet warehouse: concepts -> generations -> activations -> methods -> scores.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
concepts_app = typer.Typer(help="Concept lists.", no_args_is_help=True)
leaderboard_app = typer.Typer(help="Leaderboards computed by the SQL views.", no_args_is_help=True)
app.add_typer(concepts_app, name="concepts")
app.add_typer(leaderboard_app, name="leaderboard")

DEFAULT_MODEL = "embedded:smollm2"
DEFAULT_CONCEPT_SET = "concept10"

ConceptSet = Annotated[str, typer.Option("--concept-set", "-c", help="Concept set name.")]
Model = Annotated[str, typer.Option("--model", "-m", help="embedded:smollm2 | embedded:gemma3-270m | HF dir | .gguf | hub id (cached).")]
Layer = Annotated[Optional[int], typer.Option("--layer", "-l", help="Decoder layer L (default: the model's default, ~40% depth).")]
Methods = Annotated[list[str], typer.Option("--method", help="Method registry key (repeatable); 'all' = every method.")]


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def _catalog(ctx: typer.Context, read_only: bool = False, create: bool = True):
    from axwarehouse.catalog import Catalog

    return Catalog(ctx.obj["catalog"], read_only=read_only, create=create)


def _echo_table(rel, fmt: OutputFormat = OutputFormat.table) -> None:
    from axwarehouse.display import render

    typer.echo(render(rel, fmt.value))


@app.callback()
def main_callback(
    ctx: typer.Context,
    catalog: Annotated[Optional[Path], typer.Option("--catalog", envvar="AXW_CATALOG",
                                                    help="Catalog file (default ./catalog.duckdb).")] = None,
) -> None:
    ctx.obj = {"catalog": catalog}


@app.command("import-axbench")
def import_axbench_cmd(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="AxBench release folder (generate/, inference/).")],
    concept_set: Annotated[Optional[str], typer.Option("--concept-set", "-c", help="Name (default: folder name).")] = None,
    replace: Annotated[bool, typer.Option(help="Replace an existing concept set of that name.")] = False,
) -> None:
    """Import an AxBench release into `concepts` and `generations`."""
    from stages.import_axbench import import_axbench, read_release

    read_release(directory)  # validate before the catalog is touched
    with _catalog(ctx) as cat:
        out = import_axbench(cat, directory, concept_set, replace=replace)
    if out["skipped"]:
        typer.echo(f"concept set {out['concept_set']}: already imported, nothing to do")
    else:
        typer.echo(f"concept set {out['concept_set']}: {out['concepts']} concepts, {out['generations']} generations")


@concepts_app.command("import")
def concepts_import_cmd(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV (concept[,ref]) or JSONL ({concept, ref}) file.")],
    concept_set: Annotated[Optional[str], typer.Option("--concept-set", "-c", help="Name (default: file stem).")] = None,
) -> None:
    """Import a list of concept names as a new concept set."""
    from stages.concepts import import_concepts, read_concept_list

    read_concept_list(file)
    with _catalog(ctx) as cat:
        out = import_concepts(cat, file, concept_set)
    msg = "already imported, nothing to do" if out["skipped"] else f"{out['concepts']} concepts"
    typer.echo(f"concept set {out['concept_set']}: {msg}")


@app.command("activations")
def activations_cmd(
    ctx: typer.Context,
    concept_set: ConceptSet = DEFAULT_CONCEPT_SET,
    model: Model = DEFAULT_MODEL,
    layer: Layer = None,
    split: Annotated[Optional[list[str]], typer.Option(help="Splits to capture (default: train and latent_eval).")] = None,
    batch_tokens: Annotated[int, typer.Option(help="Padded tokens per forward batch.")] = 4096,
) -> None:
    """Cache per-token activations at the output of decoder layer L (one forward pass per example)."""
    from stages.activations import ActivationsConfig, run_activations

    cfg = ActivationsConfig(concept_set=concept_set, model=model, layer=layer, splits=tuple(split or ()),
                            batch_tokens=batch_tokens)
    with _catalog(ctx) as cat:
        out = run_activations(cat, cfg)
    typer.echo(out.summary())


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    method: Methods,
    concept_set: ConceptSet = DEFAULT_CONCEPT_SET,
    model: Model = DEFAULT_MODEL,
    layer: Layer = None,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 42,
    device: Annotated[str, typer.Option(help="Device for methods that train through the model (cpu, cuda, mps).")] = "cpu",
    settings: Annotated[Optional[list[str]], typer.Option("--set", help="Method setting METHOD.FIELD=VALUE (repeatable).")] = None,
    replace: Annotated[bool, typer.Option(help="Drop this setting's artifacts and latent scores, then re-train.")] = False,
) -> None:
    """Train methods into `method_artifacts` (cached activations; ReFT-r1/SSV/IG/IxG also run the model)."""
    from stages.train import TrainConfig, run_train

    cfg = TrainConfig(concept_set=concept_set, model=model, layer=layer, methods=tuple(method), seed=seed,
                      device=device, overrides=tuple(settings or ()), replace=replace)
    with _catalog(ctx) as cat:
        out = run_train(cat, cfg)
    typer.echo(out.summary())


@app.command("latent")
def latent_cmd(
    ctx: typer.Context,
    method: Methods,
    concept_set: ConceptSet = DEFAULT_CONCEPT_SET,
    model: Model = DEFAULT_MODEL,
    layer: Layer = None,
    seed: Annotated[int, typer.Option(help="Seed of the trained artifacts to score.")] = 42,
    device: Annotated[str, typer.Option(help="Device for methods that run the model while scoring (IG, IxG, Prompt).")] = "cpu",
    settings: Annotated[Optional[list[str]], typer.Option("--set", help="Method setting METHOD.FIELD=VALUE, as given to train.")] = None,
) -> None:
    """Score latent_eval examples against every concept direction (one matmul), max-pooled into `latent_scores`."""
    from stages.latent import LatentConfig, run_latent

    cfg = LatentConfig(concept_set=concept_set, model=model, layer=layer, methods=tuple(method), seed=seed,
                       device=device, overrides=tuple(settings or ()))
    with _catalog(ctx) as cat:
        out = run_latent(cat, cfg)
    typer.echo(out.summary())


@leaderboard_app.command("latent")
def leaderboard_latent_cmd(
    ctx: typer.Context,
    concept_set: Annotated[Optional[str], typer.Option("--concept-set", "-c")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
) -> None:
    """Mean AUROC per method (view latent_leaderboard)."""
    from stages.leaderboard import latent_leaderboard

    with _catalog(ctx, read_only=True) as cat:
        _echo_table(latent_leaderboard(cat, concept_set), fmt)


@app.command("sql")
def sql_cmd(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="SQL to run read-only against the catalog.")],
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
) -> None:
    """Run read-only SQL on the catalog (tables and views)."""
    import duckdb

    with _catalog(ctx, read_only=True) as cat:
        try:
            rel = cat.sql(query)
        except duckdb.Error as exc:
            raise AxwError(f"SQL error: {str(exc).splitlines()[0]}") from exc
        if rel is None:
            raise AxwError("the query returned no result set")
        _echo_table(rel, fmt)


@app.command("status")
def status_cmd(ctx: typer.Context) -> None:
    """Row counts per table, and what is missing or stale per concept set / model / layer / method."""
    from stages.status import status_report

    with _catalog(ctx, read_only=True) as cat:
        typer.echo(status_report(cat))


@app.command("demo")
def demo_cmd(
    ctx: typer.Context,
    model: Model = DEFAULT_MODEL,
    layer: Layer = None,
    method: Annotated[Optional[list[str]], typer.Option("--method", help="Methods (default: diffmean pca lat probe).")] = None,
) -> None:
    """The whole latent benchmark on the shipped Concept10 data and the embedded model."""
    from stages.demo import DemoConfig, run_demo

    cfg = DemoConfig(model=model, layer=layer, methods=tuple(method or ()))
    with _catalog(ctx) as cat:
        run_demo(cat, cfg, echo=typer.echo)


# --- issue 6: SAEs (`axw sae train`) -----------------------------------------------------------------------------
sae_app = typer.Typer(help="Sparse autoencoders for the SAE / SAE-A methods.", no_args_is_help=True)
app.add_typer(sae_app, name="sae")


@sae_app.command("train")
def sae_train_cmd(
    ctx: typer.Context,
    concept_set: ConceptSet = DEFAULT_CONCEPT_SET,
    model: Model = DEFAULT_MODEL,
    layer: Layer = None,
    name: Annotated[str, typer.Option(help="SAE name (SAE/SAE-A use 'ours-topk' by default).")] = "ours-topk",
    d_sae: Annotated[int, typer.Option(help="Number of features.")] = 4096,
    k: Annotated[int, typer.Option(help="Active features per token (TopK).")] = 32,
    epochs: Annotated[int, typer.Option(help="Passes over the cached training tokens.")] = 3,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed.")] = 42,
    device: Annotated[str, typer.Option(help="cpu, cuda or mps.")] = "cpu",
) -> None:
    """Fit a TopK SAE on cached train-split activations; written in the SAELens layout under the warehouse."""
    from stages.sae import SaeTrainConfig, run_sae_train

    if d_sae < 1 or epochs < 1:
        raise AxwError("--d-sae and --epochs must be positive")
    cfg = SaeTrainConfig(concept_set=concept_set, model=model, layer=layer, name=name, d_sae=d_sae, k=k,
                         epochs=epochs, lr=lr, seed=seed, device=device)
    with _catalog(ctx) as cat:
        typer.echo(run_sae_train(cat, cfg))


def run(argv: list[str] | None = None) -> int:
    """Run the app and return the exit code: AxwError becomes ``error: …`` and 2, usage errors click's code."""
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="axw", standalone_mode=False)
    except AxwError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        return 130
    except Exception as exc:  # an unexpected bug: still one line, the traceback on request
        if os.environ.get("AXW_DEBUG"):
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        typer.echo(f"error: internal {type(exc).__name__}: {first} (set AXW_DEBUG=1 for the traceback)", err=True)
        return 1
    return 0


def main() -> None:
    """Console-script entry point (``axw``)."""
    sys.exit(run())


if __name__ == "__main__":
    main()
