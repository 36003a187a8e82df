"""Bad input: one line `error: …`, exit code != 0, and the catalog exactly as it was."""

from __future__ import annotations

import pyarrow as pa
import pytest

from conftest import CONCEPT10, axw, tree_state


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """One catalog with the small release imported, shared by the tests of this module: each of them proves its
    failure left every data file as it was (``_assert_clean_failure``), so none can change what the next one sees."""
    from conftest import write_release

    root = tmp_path_factory.mktemp("bad-input")
    catalog_path = root / "wh" / "catalog.duckdb"
    catalog_path.parent.mkdir(parents=True)
    assert axw("--catalog", catalog_path, "import-axbench", write_release(root / "release"), "-c", "s3")[0] == 0
    return catalog_path


def _assert_clean_failure(catalog_path, args, needle):
    before = tree_state(catalog_path.parent)
    code, out, err = axw("--catalog", catalog_path, *args)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    after = tree_state(catalog_path.parent)
    # the DuckDB file may be rewritten on open (checkpoint); data files must be untouched
    strip = {k: v for k, v in before.items() if not k.startswith("catalog.duckdb")}
    assert {k: v for k, v in after.items() if not k.startswith("catalog.duckdb")} == strip


def test_missing_directory(imported, tmp_path):
    _assert_clean_failure(imported, ["import-axbench", tmp_path / "nope"], "does not exist")


def test_missing_file(imported, tmp_path):
    rel = tmp_path / "rel"
    (rel / "generate").mkdir(parents=True)
    (rel / "generate" / "metadata.jsonl").write_text((CONCEPT10 / "generate" / "metadata.jsonl").read_text())
    _assert_clean_failure(imported, ["import-axbench", rel], "train_data")


def test_missing_column(imported, tmp_path, small_release):
    import polars as pl

    rel = tmp_path / "rel2"
    import shutil

    shutil.copytree(small_release, rel)
    path = rel / "generate" / "train_data.parquet"
    pl.read_parquet(path).drop("concept_genre").write_parquet(path)
    _assert_clean_failure(imported, ["import-axbench", rel], "concept_genre")


def test_corrupt_parquet(imported, tmp_path, small_release):
    import shutil

    rel = tmp_path / "rel3"
    shutil.copytree(small_release, rel)
    (rel / "inference" / "latent_eval_data.parquet").write_bytes(b"PAR1 this is not parquet")
    _assert_clean_failure(imported, ["import-axbench", rel], "latent_eval_data.parquet")


def test_unknown_method(imported):
    _assert_clean_failure(imported, ["train", "-c", "s3", "--method", "nosuch"], "unknown method 'nosuch'")


def test_unknown_model(imported):
    _assert_clean_failure(imported, ["activations", "-c", "s3", "--model", "embedded:gpt5"], "unknown embedded model")
    _assert_clean_failure(imported, ["activations", "-c", "s3", "--model", "./no/such/dir"], "unknown model")


def test_layer_out_of_range(imported, tiny_model_dir):
    _assert_clean_failure(imported, ["activations", "-c", "s3", "--model", tiny_model_dir, "--layer", "4"],
                          "layer 4 is out of range")
    _assert_clean_failure(imported, ["activations", "-c", "s3", "--model", tiny_model_dir, "--layer", "-1"],
                          "out of range")


def test_empty_concept_set(imported, tiny_model_dir):
    _assert_clean_failure(imported, ["activations", "-c", "empty", "--model", tiny_model_dir], "has no generations")
    _assert_clean_failure(imported, ["train", "-c", "empty", "--method", "diffmean", "--model", tiny_model_dir],
                          "has no concepts")


def test_latent_before_train(imported, tiny_model_dir):
    _assert_clean_failure(imported, ["latent", "-c", "s3", "--method", "diffmean", "--model", tiny_model_dir,
                                     "--layer", "1"], "run `axw train --method diffmean` first")


def test_train_before_activations(imported, tiny_model_dir):
    _assert_clean_failure(imported, ["train", "-c", "s3", "--method", "diffmean", "--model", tiny_model_dir,
                                     "--layer", "1"], "no cached activations")


def test_sql_is_read_only_and_errors_are_one_line(imported):
    _assert_clean_failure(imported, ["sql", "DROP VIEW concepts"], "error")
    _assert_clean_failure(imported, ["sql", "SELEC nonsense"], "SQL error")
    code, out, _ = axw("--catalog", imported, "sql", "SELECT count(*) AS n FROM concepts", "--format", "json")
    assert code == 0 and '"n": 3' in out


def test_no_catalog_for_read_commands(tmp_path):
    code, _, err = axw("--catalog", tmp_path / "none.duckdb", "leaderboard", "latent")
    assert code != 0 and "no catalog" in err
    assert not (tmp_path / "none.duckdb").exists()


@pytest.mark.parametrize("args, needle", [
    (["train", "--method", "diffmean", "--bogus"], "No such option: --bogus"),
    (["no-such-command"], "No such command 'no-such-command'"),
    (["train"], "Missing option '--method'"),
    (["train", "--method", "diffmean", "--concepts", "one"], "not a concept id: 'one'"),
])
def test_usage_errors_are_one_line_with_exit_2(imported, args, needle):
    """Usage errors (typer raises its vendored click classes) are reported like every other bad input."""
    _assert_clean_failure(imported, args, needle)
    assert axw("--catalog", imported, *args)[0] == 2


def test_non_finite_cached_activations(tiny_warehouse):
    """Activations with inf (what an overflowing float16 cache held) stop training with a one-line error."""
    import pyarrow.parquet as pq

    from axwarehouse.catalog import Catalog
    from axwarehouse.warehouse_files import atomic_write_parquet

    catalog_path, common = tiny_warehouse
    with Catalog(catalog_path) as cat:
        paths = cat.table_files("activations")
    for path in paths:  # the first value of every token row (train and latent_eval), stored as bfloat16 bits
        table = pq.read_table(path)
        act = table.column("act_bf16").combine_chunks()
        flat = act.flatten().to_numpy().copy()
        flat[:: act.type.list_size] = 0x7F80  # +inf in bfloat16
        poisoned = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.uint16()), act.type.list_size)
        atomic_write_parquet(table.set_column(table.schema.get_field_index("act_bf16"), "act_bf16", poisoned), path)
    with Catalog(catalog_path) as cat:
        assert cat.sql("SELECT count(*) FROM activations WHERE isinf(act_vector(act, act_bf16)[1])"
                       ).fetchall()[0][0] == cat.count("activations")
    _assert_clean_failure(catalog_path, ["train", *common, "--method", "diffmean"], "contain inf/NaN")


@pytest.mark.parametrize("command", ["train", "latent", "steer"])
@pytest.mark.parametrize("device, needle", [("gpu0", "unknown device 'gpu0'"),
                                            ("cuda:7", "CUDA is not available")])
def test_unusable_device(imported, tiny_model_dir, command, device, needle):
    """A device torch cannot use here is refused before any work, in one line (this machine has no GPU)."""
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    _assert_clean_failure(imported, [command, "-c", "s3", "--model", tiny_model_dir, "--layer", "2",
                                     "--method", "diffmean", "--device", device], needle)


def test_vllm_engine_without_vllm(imported, tiny_model_dir):
    """``--engine vllm`` where vLLM is not installed (as in the project's own environment) is refused before any
    work, in one line."""
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    _assert_clean_failure(imported, ["steer", "-c", "s3", "--model", tiny_model_dir, "--layer", "2", "--method",
                                     "diffmean", "--engine", "vllm"], "--engine vllm needs vLLM")


@pytest.mark.parametrize("option, needle", [(["--device", "cuda"], "CUDA is not available"),
                                            (["--dtype", "float8"], "unknown --dtype 'float8'"),
                                            (["--store-dtype", "float16"], "unknown --store-dtype 'float16'"),
                                            (["--batch-tokens", "0"], "--batch-tokens must be at least 1 (got 0)")])
def test_activations_unusable_device_or_dtype(imported, tiny_model_dir, option, needle):
    """`axw activations --device cuda` on a machine without a GPU, or an unknown dtype: one line, nothing written."""
    import torch

    if option[1] == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    _assert_clean_failure(imported, ["activations", "-c", "s3", "--model", tiny_model_dir, "--layer", "2", *option],
                          needle)


@pytest.mark.parametrize("device, needle", [("gpu0", "unknown device 'gpu0'"), ("mps", "MPS is not available")])
def test_unusable_judge_device(imported, device, needle):
    import torch

    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    _assert_clean_failure(imported, ["judge", "--device", device], needle)
