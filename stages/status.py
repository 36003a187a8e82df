"""`axw status`: the workflow view — per concept set / model / layer / method what is computed, what is missing,
what is stale (config or code changed since the rows were written), and the commands `axw run` would execute next.

* missing: generations without activations; concepts without artifacts; artifacts without latent scores.
* stale config: the method's current hyperparameters (at the row's seed) hash differently from the row's
  config_hash — training again writes a new config beside the old one.
* stale code: the files that produce the rows (the stage module, the method's file, shared helpers) differ
  between the commit recorded in the rows' code_version and the working tree (git diff). Rows whose stage
  inputs are gone (latent scores without their artifact) are stale too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from axwarehouse import schemas
from axwarehouse.catalog import Catalog
from axwarehouse.lineage import code_version
from axwarehouse.staleness import code_change


@dataclass
class Status:
    lines: list[str] = field(default_factory=list)
    next_commands: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # row groups whose code changed: same key, so a re-run skips them

    def render(self) -> str:
        out = list(self.lines)
        out.append("")
        if self.next_commands:
            out.append("next (what `axw run` would do, in order):")
            out += [f"  {c}" for c in dict.fromkeys(self.next_commands)]
        elif not self.stale:
            out.append("next: nothing to do, every stage is complete and current")
        else:
            out.append("next: nothing missing")
        if self.stale:
            out.append("stale rows (their code changed; the stages skip existing keys, so remove these rows "
                       "before re-running to recompute them):")
            out += [f"  {s}" for s in dict.fromkeys(self.stale)]
        return "\n".join(out)


def _rows(cat: Catalog, query: str, params: list | None = None) -> list[tuple]:
    return cat.sql(query, params).fetchall() if params else cat.sql(query).fetchall()


def _ids(ids: list[int], limit: int = 12) -> str:
    ids = sorted(ids)
    text = ", ".join(str(i) for i in ids[:limit])
    return text + (f", … ({len(ids)} in all)" if len(ids) > limit else "")


def _q(value: object) -> str:
    text = str(value)
    return text if text.replace("-", "").replace("_", "").replace(":", "").replace(".", "").isalnum() else f"'{text}'"


def _current_hash(method: str, seed: int | None) -> str | None:
    """config_hash the method's current code gives at ``seed`` (None when the method is not registered here)."""
    from axwarehouse.errors import AxwError
    from axwarehouse.methods import get
    from stages.train import method_hash

    try:
        return method_hash(get(method)(seed=42 if seed is None else seed))
    except (AxwError, TypeError):
        return None


def _seed_of(cat: Catalog, run_id: str) -> int | None:
    rows = _rows(cat, "SELECT config FROM runs WHERE run_id = ?", [run_id])
    try:
        return int(json.loads(rows[0][0]).get("seed")) if rows else None
    except (ValueError, TypeError):
        return None


def workflow_status(cat: Catalog) -> Status:
    """Everything `axw status` prints, with the next commands collected."""
    st = Status()
    out = st.lines
    out += [f"catalog {cat.path}", f"code version {code_version()}", "", "tables:"]
    for table in schemas.TABLES:
        try:
            n = cat.count(table)
        except Exception:  # a table registered by a newer stage than this catalog knows
            n = 0
        out.append(f"  {table:<18} {n:>10,} rows")
    sets = _rows(cat, "SELECT concept_set, count(*) FROM concepts GROUP BY 1 ORDER BY 1")
    if not sets:
        out.append("\nno concept sets yet")
        st.next_commands.append("axw import-axbench DIR   (or `axw demo` for the whole benchmark on shipped data)")
        return st
    for concept_set, n_concepts in sets:
        cs = _q(concept_set)
        all_ids = [r[0] for r in _rows(cat, "SELECT concept_id FROM concepts WHERE concept_set = ?", [concept_set])]
        n_gen = cat.count("generations", "concept_set = ?", [concept_set])
        out.append(f"\nconcept set {concept_set}: {n_concepts} concepts, {n_gen} generations")
        groups = _rows(cat, """SELECT model, layer, count(DISTINCT (split, example_id)), min(code_version),
                                      max(code_version)
                               FROM activations WHERE concept_set = ? GROUP BY 1, 2 ORDER BY 1, 2""", [concept_set])
        if not groups:
            out.append("  activations: none yet")
            st.next_commands.append(f"axw activations -c {cs}")
        for model, layer, n_ex, cv_lo, cv_hi in groups:
            target = f"-c {cs} --model {_q(model)} --layer {layer}"
            missing = n_gen - n_ex
            state = "complete" if missing == 0 else f"MISSING {missing} examples"
            notes = [n for n in {code_change(cv, "activations") for cv in (cv_lo, cv_hi)} if n]
            out.append(f"  activations {model} L{layer}: {n_ex}/{n_gen} examples, {state}"
                       + "".join(f"; STALE: {n}" for n in notes))
            if notes:
                st.stale.append(f"activations {concept_set} {model} L{layer}")
            if missing:
                st.next_commands.append(f"axw activations {target}")
            _method_status(cat, st, concept_set, model, layer, all_ids, target)
    return st


def _method_status(cat: Catalog, st: Status, concept_set: str, model: str, layer: int, all_ids: list[int],
                   target: str) -> None:
    out = st.lines
    arts = _rows(cat, """SELECT method, config_hash, list(DISTINCT concept_id), any_value(run_id),
                                list(DISTINCT code_version)
                         FROM method_artifacts WHERE concept_set = ? AND model = ? AND layer = ?
                         GROUP BY 1, 2 ORDER BY 1, 2""", [concept_set, model, layer])
    scored = {(m, h): (set(ids), cvs) for m, h, ids, cvs in _rows(cat, """
        SELECT method, config_hash, list(DISTINCT concept_id), list(DISTINCT code_version) FROM latent_scores
        WHERE concept_set = ? AND model = ? AND layer = ? GROUP BY 1, 2""", [concept_set, model, layer])}
    if not arts:
        out.append("    methods: none trained yet")
        st.next_commands.append(f"axw train {target} --method all")
    for method, chash, ids, run_id, cvs in arts:
        trained = set(ids)
        have, score_cvs = scored.get((method, chash), (set(), []))
        notes = []
        missing_art = sorted(set(all_ids) - trained)
        if missing_art:
            notes.append(f"MISSING artifacts for concepts {_ids(missing_art)}")
            st.next_commands.append(f"axw train {target} --method {method}")
        missing_scores = sorted(trained - have)
        if missing_scores:
            notes.append(f"MISSING latent scores for concepts {_ids(missing_scores)}")
            st.next_commands.append(f"axw latent {target} --method {method}")
        seed = _seed_of(cat, run_id)
        current = _current_hash(method, seed)
        if current is not None and current != chash:
            notes.append(f"STALE config: {method}'s current settings hash to {current}")
            st.next_commands.append(f"axw train {target} --method {method}"
                                    + (f" --seed {seed}" if seed not in (None, 42) else ""))
            st.next_commands.append(f"axw latent {target} --method {method}"
                                    + (f" --seed {seed}" if seed not in (None, 42) else ""))
        for stage, versions in (("train", cvs), ("latent", score_cvs)):
            for note in sorted({n for n in (code_change(cv, stage, method) for cv in versions) if n}):
                notes.append(f"STALE {stage} code: {note}")
                st.stale.append(f"{stage} {method} [{chash}] {concept_set} {model} L{layer}")
        out.append(f"    {method:<10} [{chash}]: {len(trained)}/{len(all_ids)} trained, {len(have & trained)} scored"
                   + ("; " + "; ".join(notes) if notes else ", up to date"))
    for method, n in _rows(cat, """
            SELECT s.method, count(DISTINCT s.concept_id) FROM latent_scores s
            WHERE s.concept_set = ? AND s.model = ? AND s.layer = ? AND NOT EXISTS (
                SELECT 1 FROM method_artifacts a WHERE a.method = s.method AND a.model = s.model
                  AND a.layer = s.layer AND a.concept_set = s.concept_set AND a.concept_id = s.concept_id
                  AND a.config_hash = s.config_hash)
            GROUP BY 1""", [concept_set, model, layer]):
        out.append(f"    STALE: {n} concepts of {method} have latent scores but no matching artifact")


def status_report(cat: Catalog) -> str:
    """Human-readable status of the warehouse, ending with the next commands."""
    return workflow_status(cat).render()
