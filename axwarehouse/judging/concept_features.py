"""The proxy judge's concept classifier as scikit-learn pieces: character n-gram counts computed once per text,
then, inside each cross-validation fold, the fold's own vocabulary (document-frequency cut), TF-IDF and logistic
regression.

Equal to ``TfidfVectorizer(**CONCEPT_FEATURES)`` + logistic regression fitted per fold: counts do not depend on
the vocabulary, and the columns kept stay in the vectorizer's sorted vocabulary order, so each fold sees the same
matrix. Counting once is the point: tokenising every text into character n-grams (pure Python in scikit-learn) was
~90 % of a classifier's fit when each of the 5 folds and the final fit re-did it. scikit-learn has no selector by
document frequency, hence :class:`MinDocumentFrequency`. Kept apart from proxy_measures.py so that importing the judge
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


class SharedNgramCounts:
    """:func:`ngram_counts` with each distinct text analysed once per process.

    A judge run fits one classifier per concept, and every concept's training texts include the same shared
    negatives and mostly the same other concepts' positives: counting them again for each concept (pure Python in
    scikit-learn) was most of a fit. Each text's n-grams are turned into integer ids of one process-wide
    vocabulary once; :meth:`fit_transform` then only stacks rows and keeps the columns its texts use, in sorted
    n-gram order — the matrix ``ngram_counts().fit_transform(texts)`` gives. Memory grows with the distinct
    n-grams and texts seen by the process (tens of MB for a concept set's texts and its steered outputs)."""

    _vocabulary: dict[str, int] = {}
    _names: list[str] = []
    _rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    _analyze = staticmethod(ngram_counts().build_analyzer())

    def __init__(self):
        self.columns_: np.ndarray | None = None  # the global ids of this fit's columns, in column order

    @classmethod
    def _row(cls, text: str) -> tuple[np.ndarray, np.ndarray]:
        row = cls._rows.get(text)
        if row is None:
            counts: dict[int, int] = {}
            for gram in cls._analyze(text):
                gid = cls._vocabulary.get(gram)
                if gid is None:
                    gid = cls._vocabulary[gram] = len(cls._names)
                    cls._names.append(gram)
                counts[gid] = counts.get(gid, 0) + 1
            row = cls._rows[text] = (np.fromiter(counts, np.int64, len(counts)),
                                     np.fromiter(counts.values(), np.int64, len(counts)))
        return row

    def _matrix(self, texts: list[str], lookup: np.ndarray):
        from scipy.sparse import csr_matrix

        rows = [self._row(t) for t in texts]
        ids = np.concatenate([r[0] for r in rows]) if rows else np.zeros(0, np.int64)
        vals = np.concatenate([r[1] for r in rows]) if rows else np.zeros(0, np.int64)
        row_of = np.repeat(np.arange(len(rows)), [len(r[0]) for r in rows])
        col = lookup[ids] if len(ids) else ids
        keep = col >= 0
        m = csr_matrix((vals[keep], (row_of[keep], col[keep])), shape=(len(rows), len(self.columns_)))
        m.sort_indices()
        return m

    def fit_transform(self, texts: list[str]):
        for t in texts:
            self._row(t)
        used = np.unique(np.concatenate([self._rows[t][0] for t in texts]))
        names = self._names
        self.columns_ = np.array(sorted(used.tolist(), key=names.__getitem__), dtype=np.int64)
        return self.transform(texts)

    def transform(self, texts: list[str]):
        for t in texts:
            self._row(t)  # a new text may add n-grams to the process-wide vocabulary
        lookup = np.full(len(self._names), -1, dtype=np.int64)
        lookup[self.columns_] = np.arange(len(self.columns_))
        return self._matrix(texts, lookup)


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
    """The classifier's last step (also the last step of the per-fold TF-IDF reference it is checked against).

    liblinear's dual problem: with a few hundred texts and tens of thousands of n-gram columns the dual has one
    variable per text instead of one per column and solves the same L2-regularised problem much faster
    (bench/proxy_judge_speed.py); at ``tol=1e-6`` its probabilities are closer to a tight-tolerance solution than
    the primal solver's default tolerance gave."""
    return LogisticRegression(C=10.0, class_weight="balanced", solver="liblinear", dual=True, tol=1e-6,
                              max_iter=1000, random_state=seed)


def classifier(seed: int) -> Pipeline:
    """n-gram counts (already computed) → the fitted rows' vocabulary → TF-IDF → logistic regression."""
    return make_pipeline(MinDocumentFrequency(), TfidfTransformer(sublinear_tf=CONCEPT_FEATURES["sublinear_tf"]),
                         regression(seed))
