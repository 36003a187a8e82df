"""The proxy judge's concept classifier as scikit-learn pieces: character n-gram counts computed once per text,
then, inside each cross-validation fold, the fold's own vocabulary (document-frequency cut), TF-IDF and logistic
regression.

Equal to ``TfidfVectorizer(**CONCEPT_FEATURES)`` + logistic regression fitted per fold: counts do not depend on
the vocabulary, and the columns kept stay in the vectorizer's sorted vocabulary order, so each fold sees the same
matrix. Counting once is the point: tokenising every text into character n-grams (pure Python in scikit-learn) was
~90 % of a classifier's fit when each of the 5 folds and the final fit re-did it. scikit-learn has no selector by
document frequency, hence :class:`MinDocumentFrequency`. Kept apart from proxy_judge.py so that importing the judge
does not import scikit-learn.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline

# Features of the concept classifier: character n-grams within word boundaries (each whitespace-separated chunk
# padded with spaces), so the concept's words count wherever they stand, also inside glued or misspelt chunks.
CONCEPT_FEATURES = {"analyzer": "char_wb", "ngram_range": (3, 5), "sublinear_tf": True, "min_df": 2,
                    "lowercase": True}


def ngram_counts() -> CountVectorizer:
    """Counts of CONCEPT_FEATURES' character n-grams, over the vocabulary of every text it is fitted on."""
    return CountVectorizer(analyzer=CONCEPT_FEATURES["analyzer"], ngram_range=CONCEPT_FEATURES["ngram_range"],
                           lowercase=CONCEPT_FEATURES["lowercase"])


class MinDocumentFrequency(TransformerMixin, BaseEstimator):
    """Keep the count columns (n-grams) present in at least ``min_df`` of the rows it is fitted on (what
    ``min_df`` does inside a vectorizer's fit)."""

    def __init__(self, min_df: int = CONCEPT_FEATURES["min_df"]):
        self.min_df = min_df

    def fit(self, counts, y=None) -> MinDocumentFrequency:
        documents = np.bincount(counts.tocsr().indices, minlength=counts.shape[1])  # CSR columns: one per (row, n-gram)
        self.kept_ = np.flatnonzero(documents >= self.min_df)
        return self

    def transform(self, counts):
        return counts.tocsr()[:, self.kept_]


def regression(seed: int) -> LogisticRegression:
    """The classifier's last step (also the last step of the per-fold TF-IDF reference it is checked against)."""
    return LogisticRegression(C=10.0, class_weight="balanced", solver="liblinear", max_iter=1000, random_state=seed)


def classifier(seed: int) -> Pipeline:
    """n-gram counts (already computed) → the fitted rows' vocabulary → TF-IDF → logistic regression."""
    return make_pipeline(MinDocumentFrequency(), TfidfTransformer(sublinear_tf=CONCEPT_FEATURES["sublinear_tf"]),
                         regression(seed))
