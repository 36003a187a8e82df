"""Method math on synthetic activations with a planted concept direction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from axwarehouse.activation_store import TokenMatrix
from axwarehouse.errors import AxwError
from axwarehouse.methods import ConceptData, get, method_names

D = 24


def planted(seed: int = 0, n_ex: int = 60, length: int = 12, prefix: int = 3, strength: float = 3.0,
            spread: float = 4.0):
    """Examples whose non-prefix tokens carry `strength * u` when positive; returns (data, u)."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=D)
    u /= np.linalg.norm(u)
    labels = np.array([1, 0] * (n_ex // 2))
    acts = rng.normal(size=(n_ex * length, D)).astype(np.float32)
    positions = np.tile(np.arange(length, dtype=np.int32), n_ex)
    is_prefix = positions < prefix
    token_labels = np.repeat(labels, length)
    # positives vary strongly along u (PCA/LAT find it) and sit at +strength on average (DiffMean finds it)
    coeff = strength + rng.normal(scale=spread, size=n_ex * length)
    acts += ((token_labels == 1) & ~is_prefix)[:, None] * coeff[:, None] * u[None, :].astype(np.float32)
    tokens = TokenMatrix(torch.from_numpy(acts), np.arange(n_ex), np.arange(0, n_ex * length + 1, length),
                         positions, is_prefix)
    return ConceptData(0, "planted", tokens, labels), u


# The probe is not here: logistic regression on separable data stops once classes separate, so its w need not
# be the planted mean shift; test_probe_separates_... pins what it optimises.
@pytest.mark.parametrize("name", ["diffmean", "pca", "lat"])
def test_recovers_planted_direction(name):
    # PCA/LAT need variance along u; DiffMean/Probe need a mean shift (a tight spread keeps classes apart)
    if name in ("pca", "lat"):
        data, u = planted(n_ex=144, spread=4.0)
    else:
        data, u = planted(n_ex=144, strength=6.0, spread=0.5)
    art = get(name)(seed=1).fit(data)
    w = np.asarray(art.direction)
    assert abs(np.linalg.norm(w) - 1) < 1e-5
    cos = float(w @ u)
    if name in ("pca", "lat"):  # principal components have no sign (docs/axbench-recipes.md §7.4)
        cos = abs(cos)
    assert cos > 0.99, f"{name} cosine with planted direction {cos:.4f}"


def test_diffmean_is_the_normalised_difference_of_token_means():
    data, _ = planted(seed=3)
    rows = ~data.tokens.is_prefix
    h = data.tokens.acts.numpy()
    lab = data.token_labels
    expect = h[rows & (lab == 1)].mean(0) - h[rows & (lab == 0)].mean(0)
    expect /= np.linalg.norm(expect)
    got = get("diffmean")().fit(data).direction
    np.testing.assert_allclose(got, expect, atol=1e-5)


def test_probe_separates_separable_tokens_and_is_seeded():
    data, _ = planted(seed=5, n_ex=144, strength=6.0, spread=0.5)
    a = get("probe")(seed=7).fit(data)
    b = get("probe")(seed=7).fit(data)
    np.testing.assert_array_equal(a.direction, b.direction)
    # the score is h . w (the bias is not part of it): every positive token must outrank every negative one
    from sklearn.metrics import roc_auc_score

    rows = ~data.tokens.is_prefix
    scores = data.tokens.acts.numpy()[rows] @ a.direction
    assert roc_auc_score(data.token_labels[rows], scores) > 0.999
    # AxBench's ProbeIntervention scores h.w: the stored bias is 0, so the matmul scoring adds nothing
    assert a.bias == 0.0


def _outlier_positives(seed: int = 9, n_ex: int = 40, length: int = 10, prefix: int = 2) -> ConceptData:
    """Positive tokens vary by ~1 along e1, except one in eight that sits ~100 out along e0. Plain PCA (or PCA of
    raw pairwise differences) follows the few huge e0 tokens; PCA of *normalised* differences counts every pair
    once and follows the many e1 pairs."""
    rng = np.random.default_rng(seed)
    labels = np.array([1, 0] * (n_ex // 2))
    n = n_ex * length
    acts = 0.05 * rng.normal(size=(n, D))
    acts[:, 1] += rng.normal(size=n)
    acts[rng.random(n) < 1 / 8, 0] += 100.0 * rng.choice([-1.0, 1.0])
    positions = np.tile(np.arange(length, dtype=np.int32), n_ex)
    tokens = TokenMatrix(torch.from_numpy(acts.astype(np.float32)), np.arange(n_ex),
                         np.arange(0, n + 1, length), positions, positions < prefix)
    return ConceptData(0, "outliers", tokens, labels)


def test_lat_is_pca_of_normalised_pairwise_differences():
    """LAT = first component of PCA on L2-normalised differences of shuffled positive-token pairs: recomputed here
    with numpy's SVD, and on data where plain PCA and raw differences point elsewhere."""
    data = _outlier_positives()
    rows = data.scored_rows()
    pos = data.tokens.acts[rows].numpy()[data.token_labels[rows] == 1].astype(np.float64)
    perm = pos[np.random.default_rng(2).permutation(len(pos))]
    half = len(perm) // 2
    raw = perm[:half] - perm[half: 2 * half]
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)

    def pc1(x):
        return np.linalg.svd(x - x.mean(0), full_matrices=False)[2][0]

    lat = get("lat")(seed=2).fit(data).direction
    assert abs(float(lat @ pc1(unit))) > 0.9999  # the recipe, recomputed
    # the data tells the recipes apart: raw differences and plain PCA follow e0, normalised differences e1
    assert abs(pc1(raw)[0]) > 0.99 and abs(pc1(pos)[0]) > 0.99 and abs(pc1(unit)[1]) > 0.9
    assert abs(float(lat[1])) > 0.9
    assert abs(float(get("pca")(seed=2).fit(data).direction[0])) > 0.99


def test_registry_names_and_errors():
    assert method_names(["all"]) == sorted(method_names(["all"]))
    assert {"diffmean", "pca", "lat", "probe"} <= set(method_names(["all"]))
    assert method_names(["DiffMean", "diffmean"]) == ["diffmean"]
    with pytest.raises(AxwError, match="unknown method 'nope'"):
        method_names(["nope"])
    with pytest.raises(AxwError, match="no method given"):
        method_names([])


def test_prompt_baseline_is_a_registered_steering_method_named_not_swept():
    """`prompt` steers by prompt (a registered method's steering kind): `steer --method all` leaves the baseline out,
    naming it runs it, and a detection-only method still cannot steer."""
    from axwarehouse.errors import AxwError
    from axwarehouse.stages.steer import SteerConfig, _validate

    assert get("prompt").steering == "prompt" and "steering" in get("prompt").evaluations
    swept = _validate(SteerConfig("s", methods=("all",)))
    assert "prompt" not in swept and "diffmean" in swept
    assert _validate(SteerConfig("s", methods=("diffmean", "prompt"))) == ["diffmean", "prompt"]
    with pytest.raises(AxwError, match="detection-only"):
        _validate(SteerConfig("s", methods=("bow",)))


def test_the_documented_method_finds_the_planted_direction(tmp_path):
    """docs/adding-a-method.md's worked example, saved as the page says, registers and recovers a planted concept
    (its centred variant too); end to end through train/latent/leaderboard: test_all_methods_pipeline.py."""
    import re
    from pathlib import Path

    from axwarehouse.methods import registry

    doc = (Path(__file__).resolve().parents[1] / "docs" / "adding-a-method.md").read_text()
    path = tmp_path / "posmean.py"
    path.write_text(re.search(r"```python\n(.*?)```", doc, re.S).group(1))
    registry.load_method_file(path)
    try:
        data, u = planted(n_ex=144, strength=6.0, spread=0.5)
        for center in (False, True):
            method = get("posmean")({"center": center}, seed=0)
            w = np.asarray(method.fit(data).direction)
            assert abs(np.linalg.norm(w) - 1) < 1e-5 and float(w @ u) > 0.95, (center, float(w @ u))
    finally:
        registry.REGISTRY.pop("posmean", None)
