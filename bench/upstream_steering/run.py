"""Upstream AxBench's own steering generation, timed on the matched workload of ``bench/steer.py``.

Why: the peer figure for ``bench/steer.py`` must come from upstream's code (``axbench/scripts/inference.py --mode
steering``, DiffMean, addition), not from a re-implementation. Run with the python of a venv holding upstream's
pinned requirements; it does the one-time steps when their outputs are missing (the CPU/offline edits to the
checkout, the offline inputs, upstream's ``train.py`` and latent ``inference.py``; about 4 minutes on 2 cores),
then the timed steering run in a fresh run directory, and prints the summary. See README.md.

    python bench/upstream_steering/run.py --upstream DIR --workdir DIR [--model-dir DIR] [--prepare]
        [--max-act 8] [--concepts 2] [--factors 0.4,1.0,2.0] [--instructions 10] [--max-new-tokens 128]
        [--batch-size 10] [--temperature 1.0] [--threads 2] [--tag matched]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

import patch_upstream  # noqa: E402
import prepare  # noqa: E402
import run_config  # noqa: E402
from summary import summarise  # noqa: E402

from axwarehouse import DATA_DIR  # noqa: E402
from bench.cpu_probe import cpu_model  # noqa: E402

EMBEDDED = "embedded:smollm2"


def default_model_dir() -> Path:
    """The project's converted Hugging Face copy of the embedded SmolLM2 (newest transformers version)."""
    from axwarehouse.model.converted import FORMAT
    from axwarehouse.model.model_cache import MODELS, cache_dir

    folder = cache_dir() / MODELS[EMBEDDED].folder
    copies = [p.parent for p in folder.glob(f"hf-v{FORMAT}-transformers-*/source.json")]
    if not copies:
        sys.exit(f"no converted copy of {EMBEDDED} under {folder}: load the model once with the project "
                 f"(e.g. python -c \"from axwarehouse.model.loader import load; load('{EMBEDDED}')\") "
                 "or pass --model-dir")
    version = lambda p: tuple(int(x) for x in p.name.rsplit("-", 1)[1].split(".") if x.isdigit())  # noqa: E731
    return max(copies, key=version)


def child_env(upstream: Path, workdir: Path, threads: int, max_act: float | None) -> dict[str, str]:
    """The environment of upstream's processes: offline, the workdir's hub cache, ``threads`` threads."""
    env = dict(os.environ)
    env.update(HF_HOME=str(workdir / "hf_home"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TORCH_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join(filter(None, [str(upstream), env.get("PYTHONPATH")])))
    # upstream builds an AsyncOpenAI client (its LM judge / data generator) at start-up, which refuses to construct
    # without a key; DiffMean training, latent and steering runs never call it. A placeholder, in the child only.
    env["OPENAI_API_KEY"] = "offline-unused"
    env.pop("AXW_BENCH_MAX_ACT", None)
    if max_act is not None:
        env["AXW_BENCH_MAX_ACT"] = str(max_act)
    return env


def torchrun(script: str, args: list[str], upstream: Path, env: dict[str, str], log: Path) -> None:
    """One single-process torchrun of ``script`` from the checkout's root; its output goes to ``log``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", script, *args]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        code = subprocess.run(cmd, cwd=upstream, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if code:
        print("".join(log.read_text().splitlines(keepends=True)[-40:]), file=sys.stderr)
        sys.exit(f"{script} failed (exit {code}); log: {log}")


def one_time_steps(args: argparse.Namespace, env: dict[str, str]) -> Path:
    """The edits, inputs, trained DiffMean and latent results, each done when missing; returns the base config."""
    up, work = args.upstream, args.workdir
    changed = patch_upstream.apply(up)
    print(f"upstream checkout {up}: " + (f"edited {', '.join(changed)}" if changed else "edits present"))
    work.mkdir(parents=True, exist_ok=True)
    config = run_config.write(run_config.base_config(up, work), work / "config.yaml")
    run = work / "run"
    if args.prepare or not (prepare.snapshot_dir(work) / "config.json").exists() \
            or not (run / "generate" / "metadata.jsonl").exists():
        prepare.prepare(up, work, args.model_dir or default_model_dir(),
                        DATA_DIR / "steering_instructions" / "instructions.jsonl")
    common = ["--config", str(config), "--dump_dir", str(run)]
    if not (run / "train" / "DiffMean_weight.pt").exists():
        t0 = time.perf_counter()
        torchrun("axbench/scripts/train.py", common, up, env, work / "logs" / "train.txt")
        print(f"upstream train.py done in {time.perf_counter() - t0:.0f}s")
    if not (run / "inference" / "latent_data.parquet").exists():
        t0 = time.perf_counter()
        latent = str(up / run_config.CONCEPT10 / "inference")
        torchrun("axbench/scripts/inference.py", [*common, "--mode", "latent", "--overwrite_inference_data_dir",
                                                  latent], up, env, work / "logs" / "latent.txt")
        print(f"upstream latent inference.py done in {time.perf_counter() - t0:.0f}s")
    return config


def timed_run(args: argparse.Namespace, env: dict[str, str], base: Path) -> Path:
    """A fresh run directory (upstream resumes and appends otherwise) and the timed steering run in it."""
    work = args.workdir
    run = work / "runs" / f"{args.tag}-{time.strftime('%Y%m%d-%H%M%S')}"
    (run / "generate").mkdir(parents=True)
    (run / "inference").mkdir()
    meta = (work / "run" / "generate" / "metadata.jsonl").read_text().splitlines()[: args.concepts]
    (run / "generate" / "metadata.jsonl").write_text("\n".join(meta) + "\n")
    (run / "train").symlink_to(work / "run" / "train")  # the trained DiffMean, read only
    shutil.copy(work / "run" / "inference" / "latent_data.parquet", run / "inference")  # -> upstream's max_act
    cfg = run_config.steering_config(run_config.load(base),
                                     [float(f) for f in args.factors.split(",")], args.instructions,
                                     args.max_new_tokens, args.batch_size, args.temperature)
    config = run_config.write(cfg, run / "config.yaml")
    print(f"run dir: {run}  (concepts {args.concepts}, factors {args.factors}, instructions {args.instructions}, "
          f"max_new_tokens {args.max_new_tokens}, batch {args.batch_size}, temperature {args.temperature}, threads "
          f"{args.threads}" + (f", MAX_ACT {args.max_act:g}" if args.max_act is not None else "") + ")")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    t0 = time.perf_counter()
    torchrun(str(HERE / "timed_steering.py"), ["--config", str(config), "--dump_dir", str(run), "--mode", "steering"],
             args.upstream, env, run / "log.txt")
    wall = time.perf_counter() - t0
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"total wall incl. torchrun + python start-up + imports + model load: {wall:.2f}s")
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", type=Path, required=True, help="checkout of stanfordnlp/axbench (edited in place)")
    ap.add_argument("--workdir", type=Path, required=True, help="hub cache, data stand-ins, trained DiffMean, runs")
    ap.add_argument("--model-dir", type=Path, default=None, help="converted HF copy of the embedded SmolLM2 "
                    "(default: the project's model cache)")
    ap.add_argument("--prepare", action="store_true", help="rewrite the hub cache and data stand-ins")
    ap.add_argument("--max-act", type=float, default=None, help="steering magnitude for every concept (strength = "
                    "factor x it, as bench/steer.py --magnitude); default: upstream's per-concept max activation")
    ap.add_argument("--concepts", type=int, default=2, choices=(1, 2))
    ap.add_argument("--factors", default="0.4,1.0,2.0")
    ap.add_argument("--instructions", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", default="matched", help="prefix of the run directory's name")
    args = ap.parse_args()
    args.upstream, args.workdir = args.upstream.resolve(), args.workdir.resolve()
    name, flags = cpu_model()
    print(f"{name} ({flags})")
    env = child_env(args.upstream, args.workdir, args.threads, args.max_act)
    base = one_time_steps(args, env)
    run = timed_run(args, env, base)
    for line in summarise(run, prepare.snapshot_dir(args.workdir)):
        print(line)


if __name__ == "__main__":
    main()
