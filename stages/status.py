"""`axw status`: the workflow view — per concept set / model / layer / method what is computed, what is missing,
what is stale (config or code changed since the rows were written), and the commands `axw run` would execute next.

* missing: generations without activations; concepts without artifacts; artifacts without latent scores; steered
  generations without ratings by a judge that rated others of them (or by any judge), or without a perplexity.
* stale config: the method's current hyperparameters (at the row's seed, with the row's ``--set`` options, both
  read from the run that trained it) hash differently from the row's config_hash — training again writes a new config beside the old one.
* stale code: artifacts trained by an older version of their method's file (the source hash recorded in
  ``extra.source_hash`` differs from the file now; rows from before that hash existed fall back to a git diff of
  the method's file since the commit in their code_version); activations whose capture code (`stages/activations.py`,
  `axwarehouse/model/`) changed since their commit; latent scores whose artifact is gone. `axw train --replace`
  recomputes stale artifacts (and drops their scores, which `axw latent` then fills in).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

from axwarehouse import schemas
from axwarehouse.catalog import Catalog
from axwarehouse.lineage import code_version
from axwarehouse.staleness import code_change, method_file


def _source_hash(method: str) -> str | None:
    """Hash of the method's file now (None for a method not registered in this checkout)."""
    from axwarehouse.methods import REGISTRY, discover

    discover()
    return REGISTRY[method].source_hash() if method in REGISTRY else None


@dataclass(frozen=True)
class Step:
    """One next step: the command's argument list (``argv[0] == "axw"``), executed as is by `axw run` — never
    re-parsed from text — and shown shell-quoted by the text view."""

    argv: tuple[str, ...]
    note: str = ""  # said after the command in the text view (not part of it)

    def text(self) -> str:
        return shlex.join(self.argv) + (f"   ({self.note})" if self.note else "")


def _step(*args: object, note: str = "") -> Step:
    return Step(("axw", *(str(a) for a in args)), note)


@dataclass
class Status:
    lines: list[str] = field(default_factory=list)
    next_steps: list[Step] = field(default_factory=list)

    def steps(self) -> list[Step]:
        """The next steps in order, each once."""
        return list(dict.fromkeys(self.next_steps))

    def render(self) -> str:
        out = list(self.lines)
        out.append("")
        if self.next_steps:
            out.append("next (what `axw run` would do, in order):")
            out += [f"  {step.text()}" for step in self.steps()]
        else:
            out.append("next: nothing to do, every stage is complete and current")
        return "\n".join(out)


def _rows(cat: Catalog, query: str, params: list | None = None) -> list[tuple]:
    return cat.sql(query, params).fetchall() if params else cat.sql(query).fetchall()


def _ids(ids: list[int], limit: int = 12) -> str:
    ids = sorted(ids)
    text = ", ".join(str(i) for i in ids[:limit])
    return text + (f", … ({len(ids)} in all)" if len(ids) > limit else "")


def _method_facts(method: str, overrides: dict | None = None) -> tuple[bool, int | None]:
    """(has a latent evaluation, concept limit of its config with ``overrides``) of a registered method;
    (True, None) else."""
    from axwarehouse.methods import REGISTRY, discover

    discover()
    if method not in REGISTRY:
        return True, None
    cls = REGISTRY[method]
    try:
        limit = cls(overrides or None).concept_limit()
    except TypeError:
        limit = None
    return "latent" in cls.evaluations, limit


def _current_hash(method: str, seed: int | None, overrides: dict | None = None) -> str | None:
    """config_hash the method's current code gives at ``seed`` with the row's --set ``overrides`` (None when the
    method is not registered here)."""
    from axwarehouse.errors import AxwError
    from axwarehouse.methods import get
    from axwarehouse.concept_queries import method_hash

    try:
        return method_hash(get(method)(overrides or None, seed=42 if seed is None else seed))
    except (AxwError, TypeError):
        return None


def _run_facts(cat: Catalog, run_id: str, method: str) -> tuple[int | None, dict]:
    """(seed, --set overrides of ``method``) recorded in the config of the run that trained the rows."""
    rows = _rows(cat, "SELECT config FROM runs WHERE run_id = ?", [run_id])
    try:
        config = json.loads(rows[0][0]) if rows else {}
    except ValueError:
        return None, {}
    try:
        seed = int(config.get("seed"))
    except (ValueError, TypeError):
        seed = None
    overrides = config.get("overrides", {}).get(method) or {}
    return seed, overrides if isinstance(overrides, dict) else {}


def _flags(seed: int | None, method: str, overrides: dict) -> list[str]:
    """The command-line options that select a trained config of ``method``: --seed and its --set options."""
    out = ["--seed", str(seed)] if seed not in (None, 42) else []
    for k, v in sorted(overrides.items()):
        out += ["--set", f"{method}.{k}={v}"]
    return out


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
        st.next_steps.append(_step("import-axbench", "DIR",
                                   note="or `axw demo` for the whole benchmark on shipped data"))
        return st
    for concept_set, n_concepts in sets:
        all_ids = [r[0] for r in _rows(cat, "SELECT concept_id FROM concepts WHERE concept_set = ?", [concept_set])]
        n_gen = cat.count("generations", "concept_set = ?", [concept_set])
        out.append(f"\nconcept set {concept_set}: {n_concepts} concepts, {n_gen} generations")
        groups = _rows(cat, """SELECT model, layer, count(DISTINCT (split, example_id)), min(code_version),
                                      max(code_version)
                               FROM activations WHERE concept_set = ? GROUP BY 1, 2 ORDER BY 1, 2""", [concept_set])
        if not groups:
            out.append("  activations: none yet")
            st.next_steps.append(_step("activations", "-c", concept_set))
        for model, layer, n_ex, cv_lo, cv_hi in groups:
            target = ["-c", concept_set, "--model", model, "--layer", str(layer)]
            missing = n_gen - n_ex
            state = "complete" if missing == 0 else f"MISSING {missing} examples"
            notes = [n for n in {code_change(cv, "activations") for cv in (cv_lo, cv_hi)} if n]
            out.append(f"  activations {model} L{layer}: {n_ex}/{n_gen} examples, {state}"
                       + "".join(f"; STALE: {n}" for n in notes))
            if notes:  # same keys: delete the stale rows before re-capturing (no --replace for activations yet)
                out.append("    (activations are incremental by key; remove the folder of this model/layer to "
                           "re-capture)")
            if missing:
                st.next_steps.append(_step("activations", *target))
            _method_status(cat, st, concept_set, model, layer, all_ids, target)
            _steering_status(cat, st, concept_set, model, layer)
    return st


def _steering_status(cat: Catalog, st: Status, concept_set: str, model: str, layer: int) -> None:
    """Steered generations per method, and per judge that has rated any of them: outputs it has not rated yet and
    outputs without a perplexity (both filled in by `axw judge`). No judge yet: the default judge is the next step."""
    if not cat.table_files("steering_outputs"):
        return
    key = "o.concept_set = ? AND o.model = ? AND o.layer = ?"
    params = [concept_set, model, layer]
    per_method = _rows(cat, f"""
        SELECT o.method, count(*), count(DISTINCT o.concept_id),
               count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM output_perplexity p
                                                  WHERE p.output_id = o.output_id AND p.model = o.model))
        FROM steering_outputs o WHERE {key} GROUP BY 1 ORDER BY 1""", params)
    if not per_method:
        return
    judges = [r[0] for r in _rows(cat, f"""
        SELECT DISTINCT j.judge FROM judge_scores j JOIN steering_outputs o ON o.output_id = j.output_id
        WHERE {key} ORDER BY 1""", params)] if cat.table_files("judge_scores") else []
    unrated = {(j, m): n for j, m, n in _rows(cat, f"""
        SELECT jj.judge, o.method, count(*) FROM steering_outputs o CROSS JOIN (SELECT unnest(?::VARCHAR[]) AS judge) jj
        WHERE {key} AND NOT EXISTS (SELECT 1 FROM judge_scores j WHERE j.output_id = o.output_id
                                                                   AND j.judge = jj.judge)
        GROUP BY 1, 2""", [judges, *params])} if judges else {}
    for method, n, n_concepts, no_ppl in per_method:
        notes = []
        for judge in judges:
            if unrated.get((judge, method)):
                notes.append(f"MISSING {unrated[(judge, method)]} ratings by {judge}")
                st.next_steps.append(_step("judge", "-c", concept_set, "--judge", judge, "--method", method))
        if not judges:
            from axwarehouse.judging.config import DEFAULT_JUDGE  # here: importing the judges loads torch

            notes.append("not judged yet")
            st.next_steps.append(_step("judge", "-c", concept_set, "--judge", DEFAULT_JUDGE))
        elif no_ppl:
            notes.append(f"MISSING perplexity of {no_ppl} outputs")
            st.next_steps.append(_step("judge", "-c", concept_set, "--judge", judges[0], "--method", method))
        st.lines.append(f"    steering {method:<10} {n} outputs, {n_concepts} concepts"
                        + (f", judged by {', '.join(judges)}" if judges else "")
                        + ("; " + "; ".join(notes) if notes else ", up to date"))
    _judge_failure_lines(cat, st, key, params)


def _judge_failure_lines(cat: Catalog, st: Status, key: str, params: list) -> None:
    """Per judge config: its ratings and how many had no valid rating (the leaderboard scores those 0)."""
    if not cat.table_files("judge_scores"):
        return
    for judge, jhash, rubric, n, failed in _rows(cat, f"""
            SELECT j.judge, j.config_hash, coalesce(max(j.rubric), 'axw-v1'), count(*),
                   count(*) FILTER (WHERE j.score IS NULL)
            FROM judge_scores j JOIN steering_outputs o ON o.output_id = j.output_id
            WHERE {key} GROUP BY 1, 2 ORDER BY 1, 2""", params):
        st.lines.append(f"    judge {judge} [{jhash[:8]}] rubric {rubric}: {n} ratings, {failed} without a valid "
                        "rating (scored 0 on the steering leaderboard, AxBench's rule; --judge-failures drop "
                        "leaves them out)")


def _method_status(cat: Catalog, st: Status, concept_set: str, model: str, layer: int, all_ids: list[int],
                   target: list[str]) -> None:
    out = st.lines
    arts = _rows(cat, """SELECT method, config_hash, list(DISTINCT concept_id), any_value(run_id),
                                list(DISTINCT code_version) FILTER (WHERE json_extract_string(extra, '$.source_hash')
                                                                    IS NULL),
                                list(DISTINCT json_extract_string(extra, '$.source_hash'))
                                    FILTER (WHERE json_extract_string(extra, '$.source_hash') IS NOT NULL)
                         FROM method_artifacts WHERE concept_set = ? AND model = ? AND layer = ?
                         GROUP BY 1, 2 ORDER BY 1, 2""", [concept_set, model, layer])
    scored = {(m, h): set(ids) for m, h, ids in _rows(cat, """
        SELECT method, config_hash, list(DISTINCT concept_id) FROM latent_scores
        WHERE concept_set = ? AND model = ? AND layer = ? GROUP BY 1, 2""", [concept_set, model, layer])}
    if not arts:
        out.append("    methods: none trained yet")
        st.next_steps.append(_step("train", *target, "--method", "all"))
    configs = {(a[0], a[1]) for a in arts}
    for method, chash, ids, run_id, cvs, hashes in arts:
        trained = set(ids)
        have = scored.get((method, chash), set())
        notes = []
        seed, overrides = _run_facts(cat, run_id, method)
        flags = _flags(seed, method, overrides)
        latent, limit = _method_facts(method, overrides)  # steering-only methods (LoReFT, LoRA, SFT): no latent
        current = _current_hash(method, seed, overrides)
        # commands train and score the *current* settings: only a current config's gaps are theirs to fill
        is_current = current is None or current == chash
        expected = all_ids if limit is None else sorted(all_ids)[:limit]
        missing_art = sorted(set(expected) - trained)
        if missing_art:
            notes.append(f"MISSING artifacts for {len(missing_art)} concepts ({_ids(missing_art)})")
            if is_current:
                st.next_steps.append(_step("train", *target, "--method", method, *flags))
        missing_scores = sorted(trained - have) if latent else []
        if missing_scores:
            notes.append(f"MISSING latent scores for {len(missing_scores)} concepts ({_ids(missing_scores)})")
            if is_current:
                st.next_steps.append(_step("latent", *target, "--method", method, *flags))
        if not is_current:
            if (method, current) in configs:
                # the current settings are trained too (listed on their own line): these rows stay for comparison
                notes.append(f"superseded by [{current}] (the current settings)")
            else:
                notes.append(f"STALE config: {method}'s current settings hash to {current}")
                st.next_steps.append(_step("train", *target, "--method", method, *flags))
                if latent:
                    st.next_steps.append(_step("latent", *target, "--method", method, *flags))
        stale = _stale_code(method, hashes, cvs)
        notes += [f"STALE code: {note}" for note in stale]
        if stale:
            st.next_steps.append(_step("train", *target, "--method", method, "--replace", *flags))
            if latent:
                st.next_steps.append(_step("latent", *target, "--method", method, *flags))
        # the settings that tell configs of one method apart: seed and --set values (not only the hash)
        label = method + "".join(f" {method}.{k}={v}" for k, v in sorted(overrides.items())) + \
            f" seed {'?' if seed is None else seed}"
        out.append(f"    {label:<10} [{chash}]: {len(trained)} trained, "
                   + (f"{len(have & trained)} scored" if latent else "steering only")
                   + ("; " + "; ".join(notes) if notes else ", up to date"))
    out += _orphan_scores(cat, concept_set, model, layer)


def _stale_code(method: str, hashes: list[str] | None, code_versions: list[str] | None) -> list[str]:
    """Why a method's artifacts were trained by other code: an older method file, or a code change that matters."""
    current_src = _source_hash(method)
    stale = []
    if current_src and any(h != current_src for h in hashes or []):
        stale.append(f"trained by an older version of {method_file(method) or method}")
    return stale + sorted({n for n in (code_change(cv, "train", method, method_only=True)
                                       for cv in code_versions or []) if n})


def _orphan_scores(cat: Catalog, concept_set: str, model: str, layer: int) -> list[str]:
    """Lines for latent scores whose artifact row is gone."""
    return [f"    STALE: {n} concepts of {method} have latent scores but no matching artifact"
            for method, n in _rows(cat, """
            SELECT s.method, count(DISTINCT s.concept_id) FROM latent_scores s
            WHERE s.concept_set = ? AND s.model = ? AND s.layer = ? AND NOT EXISTS (
                SELECT 1 FROM method_artifacts a WHERE a.method = s.method AND a.model = s.model
                  AND a.layer = s.layer AND a.concept_set = s.concept_set AND a.concept_id = s.concept_id
                  AND a.config_hash = s.config_hash)
            GROUP BY 1""", [concept_set, model, layer])]


def status_report(cat: Catalog) -> str:
    """Human-readable status of the warehouse, ending with the next commands."""
    return workflow_status(cat).render()
