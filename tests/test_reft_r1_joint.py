"""ReFT-r1 joint dictionary (`reft-r1-joint`): the per-example edit, the row-wise unit norm, and `axw train`'s joint
protocol (one fit for the whole set, one row per concept, replaced together) through `axw latent` to the leaderboard.
Tiny random-init Llama throughout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from axwarehouse.catalog import Catalog
from axwarehouse.methods import get
from axwarehouse.methods.base import Context
from conftest import assert_leaderboard_recomputes, axw, tree_state
from test_methods_lm import _data

FAST = {"epochs": 2, "batch_size": 4, "topk": 2, "lr": 0.05}


@pytest.fixture(scope="module")
def ctx(tiny_model_dir):
    return Context(str(tiny_model_dir), 2)


def test_joint_edit_with_one_concept_is_the_reft_r1_edit_exactly():
    from axwarehouse.methods.reft_r1 import topk_edit

    g = torch.Generator().manual_seed(0)
    h = torch.randn(5, 23, 48, generator=g)
    mask = torch.rand(5, 23, generator=g) > 0.3
    w = torch.randn(48, generator=g)
    W = w[None].clone()  # a dictionary of one row
    rows = torch.zeros(5, dtype=torch.long)
    single, joint = topk_edit(h, w, mask, 4), topk_edit(h, W[rows], mask, 4)
    assert torch.equal(single[0], joint[0]) and torch.equal(single[1], joint[1])
    # two concepts in one batch: every example is edited (and its L1 taken) with its own concept's row only
    W2 = torch.randn(2, 48, generator=g)
    rows2 = torch.tensor([0, 1, 1, 0, 1])
    new, l1 = topk_edit(h, W2[rows2], mask, 4)
    for b, r in enumerate(rows2.tolist()):
        ref_new, ref_l1 = topk_edit(h[b:b + 1], W2[r], mask[b:b + 1], 4)
        torch.testing.assert_close(new[b:b + 1], ref_new, rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(l1[b:b + 1], ref_l1, rtol=1e-6, atol=1e-5)
        assert not torch.allclose(new[b:b + 1], topk_edit(h[b:b + 1], W2[1 - r], mask[b:b + 1], 4)[0])


def test_unit_norm_step_is_row_wise():
    from axwarehouse.methods.reft_r1 import unit_norm_step

    g = torch.Generator().manual_seed(1)
    W = torch.nn.Parameter(torch.randn(3, 16, generator=g) * torch.tensor([[0.1], [2.0], [30.0]]))
    W.grad = torch.randn(3, 16, generator=g) * 10
    unit_norm_step(W)
    torch.testing.assert_close(W.norm(dim=1), torch.ones(3))
    torch.testing.assert_close((W.grad * W).sum(1), torch.zeros(3), rtol=0, atol=1e-5)  # no parallel component left
    assert float(W.grad.norm()) <= 1.0 + 1e-5  # clipped over the whole dictionary (as AxBench's clip_grad_norm_)


def test_joint_with_one_concept_trains_reft_r1(ctx):
    data = _data(ctx, n=8)
    single = get("reft-r1")(FAST, seed=5).fit(data)
    joint = get("reft-r1-joint")(FAST, seed=5).fit_all({0: data})[0]
    np.testing.assert_allclose(joint.direction, single.direction, rtol=0, atol=1e-6)
    assert joint.max_train_activation == pytest.approx(single.max_train_activation, abs=1e-5)
    assert joint.extra["final_loss"] == pytest.approx(single.extra["final_loss"], abs=1e-5)


def test_every_dictionary_row_stays_unit_norm_after_each_step(ctx, monkeypatch):
    import axwarehouse.methods.reft_r1_joint as joint_mod

    norms = []
    original = joint_mod.unit_norm_step

    def recording(w):
        original(w)
        norms.append(w.detach().norm(dim=-1).clone())

    monkeypatch.setattr(joint_mod, "unit_norm_step", recording)
    a, b = _data(ctx, n=8, concept_word="banana"), _data(ctx, n=8, concept_word="volcano")
    b.concept_id = 7
    arts = get("reft-r1-joint")(FAST, seed=2).fit_all({0: a, 7: b})
    n_steps = FAST["epochs"] * int(np.ceil(16 / FAST["batch_size"]))  # 8 + 8 (example, concept) pairs
    assert len(norms) == n_steps and all(n.shape == (2,) for n in norms)
    torch.testing.assert_close(torch.stack(norms), torch.ones(n_steps, 2))  # both rows, at every step
    assert sorted(arts) == [0, 7] and [arts[c].extra["row"] for c in (0, 7)] == [0, 1]
    assert all(arts[c].extra["joint_concepts"] == 2 and arts[c].extra["n_train"] == 8 for c in (0, 7))
    d0, d7 = (torch.tensor(arts[c].direction) for c in (0, 7))
    assert abs(float(d0.norm()) - 1) < 1e-5 and abs(float(d7.norm()) - 1) < 1e-5
    assert float((d0 - d7).abs().max()) > 1e-3  # each row learned from its own concept's examples


@pytest.fixture
def warehouse(tiny_warehouse):
    return tiny_warehouse


def _rows(cat: Catalog) -> list[tuple]:
    return cat.sql("SELECT concept_id, run_id, direction, extra FROM method_artifacts "
                   "WHERE method = 'reft-r1-joint' ORDER BY concept_id").fetchall()


def test_axw_train_joint_one_row_per_concept_incremental_latent_and_leaderboard(warehouse):
    catalog_path, common = warehouse
    base = ["--catalog", catalog_path]
    fast = ["--set", "reft-r1-joint.epochs=1", "--set", "reft-r1-joint.train_on_negative=false"]  # quick fits
    code, out, err = axw(*base, "train", *common, "--method", "reft-r1-joint", *fast)
    assert code == 0, err
    assert "train reft-r1-joint: 3 concepts trained jointly" in out and "0 earlier rows replaced" in out
    with Catalog(catalog_path, read_only=True) as cat:
        rows = _rows(cat)
        n_runs = cat.count("runs", "stage = 'train'")
    assert [r[0] for r in rows] == [0, 1, 2] and len({r[1] for r in rows}) == 1  # one fit, one row per concept
    dirs = np.array([r[2] for r in rows])
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0, atol=1e-5)
    assert np.abs(dirs[0] - dirs[1]).max() > 1e-4
    assert [json.loads(r[3])["row"] for r in rows] == [0, 1, 2]
    assert all(json.loads(r[3])["joint_concepts"] == 3 for r in rows)

    wh = catalog_path.parent / "warehouse"
    before = tree_state(wh)
    code, out, err = axw(*base, "train", *common, "--method", "reft-r1-joint", *fast)
    assert code == 0 and "all 3 concepts already present, nothing to do" in out, (out, err)
    assert tree_state(wh) == before

    code, out, err = axw(*base, "latent", *common, "--method", "reft-r1-joint", *fast)
    assert code == 0, err
    with Catalog(catalog_path, read_only=True) as cat:
        n_eval = cat.count("generations", "split = 'latent_eval'")
        n_scores = cat.count("latent_scores", "method = 'reft-r1-joint'")
        lb = cat.sql("SELECT n_concepts, mean_auroc, note FROM latent_leaderboard WHERE method = 'reft-r1-joint'"
                     ).fetchall()
        # scoring is the plain matmul: a token's score is ReLU(h . W[c]) of its concept's row
        s, ex, c = cat.sql("SELECT score, example_id, concept_id FROM latent_scores WHERE method = 'reft-r1-joint' "
                           "ORDER BY score DESC LIMIT 1").fetchall()[0]
        acts = np.array([a for (a,) in cat.sql(
            "SELECT act_vector(act, act_bf16) FROM activations WHERE split = 'latent_eval' AND example_id = ? "
            "AND NOT is_prefix",
            [ex]).fetchall()], dtype=np.float32)
        means = assert_leaderboard_recomputes(cat)  # mean AUROC = scikit-learn's on the stored scores
    assert n_scores == n_eval
    assert len(lb) == 1 and lb[0][0] == 3 and lb[0][1] == pytest.approx(means["reft-r1-joint"], abs=1e-9)
    assert lb[0][2] == "joint dictionary over 3 concepts (one fit)"
    assert s == pytest.approx(round(float(np.maximum(acts @ dirs[c], 0).max()), 3), abs=2e-3)

    # a concept's row goes missing: the whole dictionary is re-fitted and replaces the config's rows (no duplicates)
    with Catalog(catalog_path) as cat:
        cat.delete_where("method_artifacts", "method = 'reft-r1-joint' AND concept_id = 1")
    code, out, err = axw(*base, "train", *common, "--method", "reft-r1-joint", *fast)
    assert code == 0 and "3 concepts trained jointly" in out and "2 earlier rows replaced" in out, (out, err)
    with Catalog(catalog_path, read_only=True) as cat:
        again = _rows(cat)
        scores_left = cat.count("latent_scores", "method = 'reft-r1-joint'")
        assert cat.count("runs", "stage = 'train'") == n_runs + 1
    assert [r[0] for r in again] == [0, 1, 2] and len({r[1] for r in again}) == 1 and again[0][1] != rows[0][1]
    np.testing.assert_allclose(np.array([r[2] for r in again]), dirs, atol=1e-6)  # same seed, same data, same fit
    assert scores_left == 0  # the old rows' scores went with them; `axw latent` scores the new rows
    code, out, err = axw(*base, "latent", *common, "--method", "reft-r1-joint", *fast)
    assert code == 0 and "3 concepts scored" in out, (out, err)

    # the dictionary spans the whole set: a concept subset (TrainConfig.concepts) is an error when named explicitly
    from axwarehouse.errors import AxwError
    from axwarehouse.stages.train import TrainConfig, run_train

    with Catalog(catalog_path) as cat, pytest.raises(AxwError, match="every concept of the set"):
        run_train(cat, TrainConfig("s3", common[3], 2, ("reft-r1-joint",), concepts=(0,),
                                   overrides=("reft-r1-joint.epochs=1", "reft-r1-joint.train_on_negative=false")))
