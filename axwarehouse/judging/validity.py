"""One line saying how valid a judge is, from the `judge_validity_macro` view (`axw judge validate`): shown under the
steering leaderboard and on the report's steering page beside the scores that judge gave."""

from __future__ import annotations

from axwarehouse.catalog import Catalog


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def validity_line(cat: Catalog, judge: str, judge_config_hash: str, concept_set: str) -> str:
    """One line: the validity of one judge config on a concept set's held-out texts (or how to measure it)."""
    rows = {r[0]: r[1:] for r in cat.sql(
        """SELECT criterion, false_positive_rate, max_false_positive_rate, true_positive_rate, kappa, auroc,
                  hard_negative_fpr FROM judge_validity_macro
           WHERE judge = ? AND judge_config_hash = ? AND concept_set = ?""",
        [judge, judge_config_hash, concept_set]).fetchall()}
    if not rows:
        short = "proxy" if judge.startswith("proxy:") else judge
        return (f"judge validity {judge} on {concept_set}: not validated (`axw judge validate -c {concept_set} "
                f"--judge {short}`)")
    parts = []
    for crit, (fpr, max_fpr, tpr, kappa, auroc, hard) in sorted(rows.items()):
        text = f"{crit} FPR {_fmt(fpr)} (max {_fmt(max_fpr)}) TPR {_fmt(tpr)} kappa {_fmt(kappa)} AUROC {_fmt(auroc)}"
        parts.append(text + (f" hard-negative FPR {_fmt(hard)}" if hard is not None else ""))
    return f"judge validity {judge} on {concept_set} (macro over concepts): " + "; ".join(parts)
