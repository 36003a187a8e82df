"""SAE layouts (SAELens, GemmaScope), SAE-A feature choice, the TopK trainer and BoW, on synthetic data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from axwarehouse.errors import AxwError
from axwarehouse.methods import ConceptData, get
from axwarehouse.methods.base import Context
from axwarehouse.sae.layout import load_sae, save_sae_lens
from test_methods import D, planted


def _sae_weights(d=D, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"W_enc": torch.randn(d, n, generator=g), "b_enc": torch.randn(n, generator=g) * 0.1,
            "W_dec": torch.randn(n, d, generator=g), "b_dec": torch.randn(d, generator=g) * 0.1,
            "threshold": torch.rand(n, generator=g)}


def test_saelens_jumprelu_and_gemmascope_layouts_encode_the_same(tmp_path):
    w = _sae_weights()
    lens = tmp_path / "lens"
    lens.mkdir()
    save_file(w, str(lens / "sae_weights.safetensors"))
    (lens / "cfg.json").write_text(json.dumps({"architecture": "jumprelu", "d_in": D, "d_sae": 16}))
    scope = tmp_path / "scope"
    scope.mkdir()
    np.savez(scope / "params.npz", **{k: v.numpy() for k, v in w.items()})
    x = torch.randn(50, D)
    pre = x @ w["W_enc"] + w["b_enc"]
    expect = torch.relu(pre) * (pre > w["threshold"])  # JumpReLU, no b_dec subtraction
    torch.testing.assert_close(load_sae(lens).encode(x), expect)
    torch.testing.assert_close(load_sae(scope).encode(x), expect)


def test_topk_layout_keeps_k_features_and_bad_dirs_are_clear_errors(tmp_path):
    w = _sae_weights()
    w.pop("threshold")
    folder = tmp_path / "topk"
    folder.mkdir()
    save_file(w, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"architecture": "topk", "activation_fn_kwargs": {"k": 3},
                                                 "apply_b_dec_to_input": True}))
    sae = load_sae(folder)
    x = torch.randn(40, D)
    z = sae.encode(x)
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    assert int((z > 0).sum(1).max()) <= 3
    top = pre.topk(3, dim=1)
    torch.testing.assert_close(z.gather(1, top.indices), torch.relu(top.values))
    with pytest.raises(AxwError, match="neither a SAELens"):
        load_sae(tmp_path)
    (tmp_path / "broken").mkdir()
    save_file({"W_enc": w["W_enc"]}, str(tmp_path / "broken" / "sae_weights.safetensors"))
    (tmp_path / "broken" / "cfg.json").write_text("{}")
    with pytest.raises(AxwError, match="lacks b_enc"):
        load_sae(tmp_path / "broken")


def test_sae_a_picks_the_planted_feature(tmp_path):
    data, u = planted(seed=4, n_ex=40, strength=3.0, spread=0.5)
    w = _sae_weights(seed=2)
    w["W_enc"][:, 5] = torch.tensor(u, dtype=torch.float32) * 2  # feature 5 reads the concept direction
    w["b_enc"][5] = 0.0
    w["threshold"][5] = 0.5
    folder = tmp_path / "sae"
    folder.mkdir()
    save_file(w, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"architecture": "jumprelu"}))
    data.ctx = Context("unused", 0, warehouse=tmp_path)
    method = get("sae-a")({"sae": str(folder)})
    art = method.fit(data)
    assert art.extra["feature"] == 5 and art.extra["train_auroc"] > 0.99
    np.testing.assert_allclose(art.direction, w["W_dec"][5].numpy())  # steering uses the decoder row
    scores = method.score_tokens(art, data.tokens, data.ctx)
    torch.testing.assert_close(scores, load_sae(folder).encode(data.tokens.acts)[:, 5])
    # SAE (the concept's own feature) reads the feature named by sae_id
    data.sae_id = 7
    assert get("sae")({"sae": str(folder)}).fit(data).extra["feature"] == 7
    data.sae_id = 99
    with pytest.raises(AxwError, match="has no feature"):
        get("sae")({"sae": str(folder)}).fit(data)


def test_topk_trainer_recovers_a_sparse_dictionary_and_round_trips(tmp_path):
    from axwarehouse.sae.topk import TopKConfig, fraction_of_variance_unexplained, train_topk_sae

    g = torch.Generator().manual_seed(0)
    atoms = torch.randn(32, D, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    idx = torch.stack([torch.randperm(32, generator=g)[:2] for _ in range(3000)])
    coef = torch.rand(3000, 2, generator=g) * 3 + 1
    x = (coef.unsqueeze(-1) * atoms[idx]).sum(1) * 7.0 + 0.5  # scaled and shifted: the fold-back must handle it
    sae, stats = train_topk_sae(x, TopKConfig(d_sae=64, k=2, epochs=30, batch_tokens=256, lr=3e-3, seed=0))
    assert stats["fvu"] < 0.15, stats
    baseline = fraction_of_variance_unexplained(
        type(sae)(sae.W_enc, sae.b_enc, sae.W_dec * 0, sae.b_dec, "topk", None, 2, True), x)
    assert baseline > 0.99  # decoding nothing explains nothing: FVU is measured against the data variance
    save_sae_lens(sae, tmp_path / "ours")
    again = load_sae(tmp_path / "ours")
    torch.testing.assert_close(again.encode(x[:100]), sae.encode(x[:100]))


def test_bow_separates_texts_by_their_words(tmp_path):
    from axwarehouse.weights import save_weights

    rng = np.random.default_rng(0)
    filler = "the a of to and in is it that for on with as was at by".split()

    def text(word):
        return " ".join(rng.choice(filler, 12).tolist() + ([word] if word else []))

    labels = np.array([1, 0] * 30)
    outputs = [text("volcano" if y else None) for y in labels]
    data, _ = planted(n_ex=60)
    data = ConceptData(0, "volcanoes", data.tokens, labels, [""] * 60, outputs, Context("x", 0, warehouse=tmp_path))
    method = get("bow")()
    art = method.fit(data)
    art.weights_path = save_weights(tmp_path, "w/bow.safetensors", art.weights, art.weights_meta)
    test_out = [text("volcano"), text(None), text("volcano"), text(None)]
    scores = method.score_examples(art, "volcanoes", [""] * 4, test_out, data.ctx)
    assert scores[0] > 0.9 and scores[2] > 0.9 and scores[1] < 0.1 and scores[3] < 0.1
    # the scores are LogisticRegression.predict_proba's positive column
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = CountVectorizer()
    clf = LogisticRegression(C=100, max_iter=1000, random_state=42).fit(vec.fit_transform(outputs), labels)
    np.testing.assert_allclose(scores, clf.predict_proba(vec.transform(test_out))[:, 1], atol=1e-6)


def test_topk_trainer_streams_chunks_within_its_buffer_and_is_deterministic():
    """Chunk loaders instead of one tensor: every epoch loads each chunk once and yields every token exactly once,
    in full batches but the last; a buffer fill mixes only the chunks that fit in it; a tensor is shuffled whole, as
    before streaming; two runs give the same SAE; and the streamed SAE fits as well as one trained on the whole
    tensor."""
    from axwarehouse.sae.topk import TopKConfig, _batches, train_topk_sae

    g = torch.Generator().manual_seed(0)
    atoms = torch.randn(32, D, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    idx = torch.stack([torch.randperm(32, generator=g)[:2] for _ in range(3000)])
    x = ((torch.rand(3000, 2, generator=g) * 3 + 1).unsqueeze(-1) * atoms[idx]).sum(1) * 7.0 + 0.5
    parts = list(x.split(250))  # twelve "concepts" of 250 tokens
    loads = [0] * len(parts)

    def loader(i):
        def load():
            loads[i] += 1
            return parts[i]
        return load

    chunks = [loader(i) for i in range(len(parts))]
    seen = list(_batches(chunks, 1.0, 256, 600, torch.Generator().manual_seed(1)))
    assert loads == [1] * len(parts)
    assert [len(b) for b in seen[:-1]] == [256] * (len(seen) - 1) and 0 < len(seen[-1]) <= 256
    got = torch.cat(seen)
    assert torch.equal(got[torch.argsort(got[:, 0])], x[torch.argsort(x[:, 0])])  # each token exactly once
    # a buffer of 600 tokens mixes at most three 250-token chunks (+ a tail under one batch): the first batch's
    # tokens come from at most three chunks
    first = {int(torch.nonzero((x == t).all(1))[0]) // 250 for t in seen[0]}
    assert len(first) <= 3

    # one chunk that fits the buffer (a tensor in memory) is one permutation of every token, as before streaming
    whole = list(_batches([lambda: x], 2.0, 256, len(x), torch.Generator().manual_seed(5)))
    again = [(x / 2.0)[i] for i in torch.randperm(len(x), generator=torch.Generator().manual_seed(5)).split(256)]
    assert len(whole) == len(again) and all(torch.equal(a, b) for a, b in zip(whole, again))

    cfg = TopKConfig(d_sae=64, k=2, epochs=30, batch_tokens=256, lr=3e-3, seed=0)
    a, stats_a = train_topk_sae(chunks, cfg, buffer_tokens=600)
    b, stats_b = train_topk_sae(chunks, cfg, buffer_tokens=600)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert stats_a == stats_b and stats_a["n_tokens"] == 3000
    _, whole = train_topk_sae(x, cfg)
    assert stats_a["fvu"] < 0.15 and whole["fvu"] < 0.15, (stats_a, whole)
