"""The activation store: bfloat16 bit patterns round-trip exactly, one folder per concept, and old float32-layout
warehouses still read."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from axwarehouse.activation_store import SHARED, ActivationReader, partition_dir
from axwarehouse.catalog import Catalog
from conftest import axw, write_release


def _stored(catalog_path, model: str, split: str, example_id: int) -> tuple[np.ndarray, str]:
    """The stored vectors of one example straight from its Parquet file, and the column that held them."""
    with Catalog(catalog_path, read_only=True) as cat:
        files = cat.table_files("activations")
    for path in files:
        t = pq.read_table(path)
        t = t.filter(pa.compute.and_(pa.compute.equal(t.column("split"), split),
                                     pa.compute.equal(t.column("example_id"), example_id)))
        if t.num_rows:
            t = t.sort_by("position")
            if t.column("act_bf16").null_count == 0:
                col = t.column("act_bf16").combine_chunks()
                assert pa.types.is_fixed_size_list(col.type)  # fixed width per token, not a variable-length list
                return col.flatten().to_numpy().reshape(t.num_rows, -1), "act_bf16"
            return t.column("act").combine_chunks().flatten().to_numpy().reshape(t.num_rows, -1), "act"
    raise AssertionError("example not stored")


def _reference(model_dir, dtype, split: str, inp: str, outp: str) -> torch.Tensor:
    from axwarehouse.model.capture import forward_to_layer
    from axwarehouse.model.chat import ChatFormat
    from axwarehouse.model.loader import load

    lm = load(str(model_dir), dtype)
    ids = torch.tensor([ChatFormat.of(lm.tokenizer).ids_for(split, inp, outp)])
    return forward_to_layer(lm.model, lm.decoder_layers(), 2, ids, torch.ones_like(ids))[0]


@pytest.mark.parametrize("dtype, store", [("bfloat16", "bfloat16"), ("float32", "bfloat16"),
                                          ("float32", "float32")])
def test_stored_values_are_the_forward_pass_bit_for_bit(tmp_path, tiny_model_dir, small_release, dtype, store):
    """--batch-tokens 1 runs every example alone, so the reference forward is the same computation: bfloat16 rows
    hold exactly the bf16 (or bf16-rounded float32) block output, float32 rows exactly the float32 one."""
    catalog_path = tmp_path / "wh" / "catalog.duckdb"
    catalog_path.parent.mkdir()
    base = ["--catalog", catalog_path]
    assert axw(*base, "import-axbench", small_release, "-c", "s3")[0] == 0
    code, out, err = axw(*base, "activations", "-c", "s3", "--model", tiny_model_dir, "--layer", "2",
                         "--dtype", dtype, "--store-dtype", store, "--batch-tokens", "1", "--split", "latent_eval")
    assert code == 0, err
    with Catalog(catalog_path, read_only=True) as cat:
        rows = cat.sql("SELECT split, example_id, input, output FROM generations WHERE split = 'latent_eval' "
                       "ORDER BY example_id LIMIT 3").fetchall()
    for split, ex, inp, outp in rows:
        got, column = _stored(catalog_path, str(tiny_model_dir), split, ex)
        ref = _reference(tiny_model_dir, dtype, split, inp, outp)
        if store == "bfloat16":
            assert column == "act_bf16"
            want = ref.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
            np.testing.assert_array_equal(got, want)
        else:
            assert column == "act"
            np.testing.assert_array_equal(got.view(np.uint32), ref.numpy().view(np.uint32))
        # and the reader gives the same values back as float32
        reader = ActivationReader(catalog_path.parent / "warehouse", str(tiny_model_dir), 2, "s3", split)
        with Catalog(catalog_path, read_only=True) as cat:
            owner = cat.sql("SELECT concept_id FROM generations WHERE split = ? AND example_id = ?",
                            [split, ex]).fetchall()[0][0]
        m = reader.read([owner], [ex])
        np.testing.assert_array_equal(m.acts.numpy().view(np.uint32),
                                      ref.to(torch.bfloat16 if store == "bfloat16" else torch.float32)
                                      .float().numpy().view(np.uint32))


@pytest.fixture(scope="module")
def many_concepts(tmp_path_factory, tiny_model_dir):
    """Eight concepts (few examples each) with bfloat16 activations of the tiny model at layer 2."""
    root = tmp_path_factory.mktemp("many")
    release = write_release(root / "release", n_concepts=8, n_pos=4, n_neg=4, n_eval=2)
    catalog_path = root / "wh" / "catalog.duckdb"
    catalog_path.parent.mkdir()
    assert axw("--catalog", catalog_path, "import-axbench", release, "-c", "s8")[0] == 0
    code, _, err = axw("--catalog", catalog_path, "activations", "-c", "s8", "--model", tiny_model_dir,
                       "--layer", "2", "--split", "train")
    assert code == 0, err
    return catalog_path, str(tiny_model_dir)


def test_one_folder_per_concept_and_shared_negatives(many_concepts):
    catalog_path, model = many_concepts
    wh = catalog_path.parent / "warehouse"
    with Catalog(catalog_path, read_only=True) as cat:
        owners = cat.sql("SELECT DISTINCT concept_id FROM generations WHERE split = 'train' ORDER BY 1").fetchall()
        for (c,) in owners:
            files = list(partition_dir(wh, model, 2, "s8", "train", c).glob("*.parquet"))
            assert files, c
            in_files = pa.concat_tables([pq.read_table(f, columns=["concept_id", "example_id"]) for f in files])
            assert set(in_files.column("concept_id").to_pylist()) == {c}
            want = {e for (e,) in cat.sql("SELECT example_id FROM generations WHERE split = 'train' AND "
                                          "concept_id = ?", [c]).fetchall()}
            assert set(in_files.column("example_id").to_pylist()) == want
    assert [c for (c,) in owners][0] == SHARED and len(owners) == 9


def test_train_one_concept_reads_only_its_partition_and_shared_negatives(many_concepts):
    """`train --concepts 0` on eight concepts opens concept 0's files and the shared negatives' files, once each."""
    from axwarehouse.stages.train import TrainConfig, run_train

    catalog_path, model = many_concepts
    wh = catalog_path.parent / "warehouse"
    mine = (list(partition_dir(wh, model, 2, "s8", "train", 0).glob("*.parquet"))
            + list(partition_dir(wh, model, 2, "s8", "train", SHARED).glob("*.parquet")))
    rows = sum(pq.read_metadata(f).num_rows for f in mine)
    with Catalog(catalog_path) as cat:
        total = cat.count("activations")
        result = run_train(cat, TrainConfig("s8", model, 2, ("diffmean", "probe"), concepts=(0,)))
    assert result.trained == {"diffmean": 1, "probe": 1}
    # the shared negatives are read once for both methods; concept 0's files once per method
    n0 = len(list(partition_dir(wh, model, 2, "s8", "train", 0).glob("*.parquet")))
    assert result.files_read == len(mine) + n0
    assert result.rows_read == rows + sum(pq.read_metadata(f).num_rows
                                          for f in partition_dir(wh, model, 2, "s8", "train", 0).glob("*.parquet"))
    others = sum(pq.read_metadata(f).num_rows for c in range(1, 8)
                 for f in partition_dir(wh, model, 2, "s8", "train", c).glob("*.parquet"))
    assert others > 0 and rows + others == total  # seven concepts' rows exist and none of them was read


def test_sae_train_reads_one_partition_at_a_time_and_shared_negatives_once(many_concepts, monkeypatch):
    """`axw sae train` on eight concepts: no read holds more than one concept's partition (or the shared negatives),
    the shared negatives are read once for all passes, every concept once per pass (moments, each epoch, FVU), and
    the SAE covers every scored token of the train split."""
    import axwarehouse.activation_store as store
    from axwarehouse.stages.sae import SaeTrainConfig, run_sae_train

    catalog_path, model = many_concepts
    wh = catalog_path.parent / "warehouse"
    reads: list[tuple[tuple[int, ...], int]] = []
    plain = store.ActivationReader.read

    def counted(self, concept_ids, example_ids=None):
        out = plain(self, concept_ids, example_ids)
        reads.append((tuple(concept_ids), len(out.acts)))
        return out

    monkeypatch.setattr(store.ActivationReader, "read", counted)
    epochs = 2
    with Catalog(catalog_path) as cat:
        run_sae_train(cat, SaeTrainConfig("s8", model, 2, name="streamed", d_sae=16, k=2, epochs=epochs,
                                          batch_tokens=64))
        n_tokens, = cat.sql("SELECT n_tokens FROM saes WHERE name = 'streamed'").fetchall()[0]
        scored = cat.count("activations", "split = 'train' AND concept_set = 's8' AND NOT is_prefix")
    per_partition = {c: sum(pq.read_metadata(f).num_rows for f in partition_dir(wh, model, 2, "s8", "train", c)
                            .glob("*.parquet")) for c in range(SHARED, 8)}
    assert all(len(c) == 1 for c, _ in reads)  # one partition per read
    assert all(rows == per_partition[c[0]] for c, rows in reads)
    counts = {c: sum(1 for r, _ in reads if r == (c,)) for c in range(SHARED, 8)}
    assert counts == {SHARED: 1, **{c: epochs + 2 for c in range(8)}}
    assert n_tokens == scored > 0
