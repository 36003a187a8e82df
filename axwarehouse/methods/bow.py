"""BoW: bag-of-words logistic regression on the text, a baseline that never looks at the model (docs/axbench-recipes.md §2.3, §2.4).

sklearn ``CountVectorizer()`` (defaults) + ``LogisticRegression(l2, C=100, lbfgs, max_iter=1000, random_state=42)``
fitted on the concept's 144 training texts; the example score is p(positive). Detection only, no token scores.

Text: instruction and response joined by a blank line. AxBench vectorises the chat-formatted rendering; the
template's words occur exactly once in every row (a constant column), so leaving them out only drops a feature the
regression cannot use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from axwarehouse.methods.base import Artifact, ConceptData, Context, Method
from axwarehouse.methods.registry import register
from axwarehouse.weights import load_weights


def bow_text(instruction: str, response: str) -> str:
    return f"{instruction}\n\n{response}"


@register("bow")
class BoW(Method):
    evaluations = ("latent",)
    needs = frozenset({"activations", "texts"})
    scoring = "examples"

    @dataclass(frozen=True)
    class Config:
        C: float = 100.0
        max_iter: int = 1000

    def fit(self, data: ConceptData) -> Artifact:
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.linear_model import LogisticRegression

        texts = [bow_text(i, o) for i, o in zip(data.inputs, data.outputs)]
        vec = CountVectorizer()
        X = vec.fit_transform(texts)
        clf = LogisticRegression(C=self.config.C,  # L2 is the default penalty
                                  solver="lbfgs", max_iter=self.config.max_iter,
                                 random_state=self.seed).fit(X, data.labels)
        vocab = vec.get_feature_names_out().tolist()
        return Artifact(None, float(clf.intercept_[0]), float(clf.predict_proba(X)[:, 1].max()),
                        extra={"vocabulary_size": len(vocab), "train_accuracy": float(clf.score(X, data.labels))},
                        weights={"coef": torch.tensor(clf.coef_[0], dtype=torch.float64)},
                        weights_meta={"vocabulary": json.dumps(vocab)})

    def score_examples(self, artifact: Artifact, concept: str, inputs: list[str], outputs: list[str],
                       ctx: Context) -> np.ndarray:
        from sklearn.feature_extraction.text import CountVectorizer

        tensors, meta = load_weights(ctx.warehouse, artifact.weights_path)
        vec = CountVectorizer(vocabulary=json.loads(meta["vocabulary"]))
        X = vec.transform([bow_text(i, o) for i, o in zip(inputs, outputs)])
        logits = X @ tensors["coef"].numpy() + artifact.bias
        return 1.0 / (1.0 + np.exp(-logits))  # predict_proba's positive column
