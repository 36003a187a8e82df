"""`axw report`: static HTML pages from the SQL views (no recomputation of scores), Vega JS inlined for offline
use, an index page linking them, and SVG/PNG exports of the main charts for papers.

Layout of ``--out`` (default ``reports/``)::

    index.html  leaderboard.html  roc.html  steering.html  geometry.html
    concepts/<concept_set>/<concept_id>.html
    img/<chart>.svg  img/<chart>.png        (leaderboard, ROC, AUROC distribution, geometry, steering charts)
    data/latent_leaderboard.csv  data/steering_leaderboard.csv   (the numbers behind the leaderboard charts)

Every file is written to a temp name and renamed, so a reader never sees half a page.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from axwarehouse.catalog import Catalog
from axwarehouse.errors import AxwError
from axwarehouse.lineage import code_version
from axwarehouse.report import steering_pages
from axwarehouse.report.html import Page, esc, table
from axwarehouse.report.latent_pages import (add_latent_leaderboard, concept_pages, geometry_page,
                                             latent_groups, latent_leaderboard_rows, roc_page)

NAV = [("Index", "index.html"), ("Leaderboard", "leaderboard.html"), ("ROC & AUROC", "roc.html"),
       ("Steering", "steering.html"), ("Geometry", "geometry.html")]


@dataclass(frozen=True)
class ReportConfig:
    out: Path = Path("reports")
    method: str | None = None  # concept pages highlight this method (default: the best on each leaderboard)
    concept_set: str | None = None  # default: every concept set
    images: bool = True  # SVG + PNG exports of the main charts
    geometry_concepts: int = 12  # concepts in the every-direction cosine heatmap


@dataclass
class ReportResult:
    out: Path
    pages: list[Path] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"report: {len(self.pages)} pages and {len(self.images)} images in {self.out} "
                f"({self.seconds:.1f}s); open {self.out / 'index.html'}")


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)
    return path


def _export_images(specs: list[tuple[str, dict]], folder: Path) -> list[Path]:
    import vl_convert as vlc

    out = []
    for name, spec in specs:
        svg = vlc.vegalite_to_svg(spec)
        out.append(_write(folder / f"{name}.svg", svg))
        out.append(_write(folder / f"{name}.png", vlc.svg_to_png(svg, scale=2)))
    return out


def concept_href(concept_set: str, concept_id: int) -> str:
    from axwarehouse.warehouse_files import partition_slug

    return f"concepts/{partition_slug(concept_set)}/{int(concept_id)}.html"


def run_report(cat: Catalog, cfg: ReportConfig) -> ReportResult:
    """Write every page of the report for the catalog's current views."""
    started = time.perf_counter()
    out = cfg.out
    if out.exists() and not out.is_dir():
        raise AxwError(f"--out {out} exists and is not a folder")
    if cfg.concept_set and cat.count("concepts", "concept_set = ?", [cfg.concept_set]) == 0:
        raise AxwError(f"concept set {cfg.concept_set!r} has no concepts in this catalog")
    if cfg.method and cat.count("latent_scores", "method = ?", [cfg.method]) == 0:
        raise AxwError(f"method {cfg.method!r} has no latent scores in this catalog (see `axw status`)")
    if cat.count("latent_scores") == 0 and cat.count("steering_outputs") == 0:
        raise AxwError("nothing to report yet: the catalog has no latent scores and no steered generations "
                       "(`axw status` lists the next commands)")
    result = ReportResult(out)
    exported: list[tuple[str, dict]] = []
    groups = latent_groups(cat, cfg.concept_set)
    cwhere, cparams = ("WHERE concept_set = ?", [cfg.concept_set]) if cfg.concept_set else ("", None)
    concepts = cat.sql(f"SELECT concept_set, concept_id, concept, genre, ref FROM concepts {cwhere} "
                       "ORDER BY concept_set, concept_id", cparams).df()
    names = {(r.concept_set, int(r.concept_id)): r.concept for r in concepts.itertuples()}

    lb = latent_leaderboard_rows(cat, groups)
    board = Page("Leaderboards", NAV)
    exported += add_latent_leaderboard(board, lb)
    exported += steering_pages.add_steering_leaderboard(board, cat)
    pages = {"leaderboard.html": board}
    roc, specs = roc_page(cat, groups, NAV, names)
    pages["roc.html"] = roc
    exported += specs
    steer, specs = steering_pages.steering_page(cat, NAV)
    pages["steering.html"] = steer
    exported += specs
    geo, specs = geometry_page(cat, groups, NAV, cfg.geometry_concepts)
    pages["geometry.html"] = geo
    exported += specs
    for (cs, cid), page in concept_pages(cat, concepts, lb, cfg.method, NAV).items():
        pages[concept_href(cs, cid)] = page
    pages["index.html"] = _index(cat, concepts, lb, cfg)

    if not lb.empty:
        result.pages.append(_write(out / "data" / "latent_leaderboard.csv", lb.to_csv(index=False)))
    for rel, page in pages.items():
        result.pages.append(_write(out / rel, page.render()))
    if cfg.images:
        result.images = _export_images(exported, out / "img")
    result.seconds = time.perf_counter() - started
    return result


def _index(cat: Catalog, concepts, lb, cfg: ReportConfig) -> Page:
    page = Page("axwarehouse report", NAV)
    page.para(f"Catalog {cat.path} · code {code_version()} · generated "
              f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. Every number comes from the "
              "catalog's SQL views; the pages open offline.")
    links = [("leaderboard.html", "Leaderboards", "latent AUROC and steering score per method, 95% bootstrap CIs"),
             ("roc.html", "ROC & AUROC", "ROC curve per method and concept, per-concept AUROC distribution"),
             ("steering.html", "Steering", "score vs steering factor, concept vs fluency trade-off"),
             ("geometry.html", "Geometry", "cosine similarity of concept directions across methods")]
    page.add("<ul>" + "".join(f'<li><a href="{esc(h)}">{esc(t)}</a> — {esc(d)}</li>' for h, t, d in links) + "</ul>")
    if not lb.empty:
        page.heading("Latent leaderboard")
        page.add(table(["group", "method", "mean AUROC", "CI low", "CI high"],
                       [(r.group, r.method, r.mean, r.ci_low, r.ci_high) for r in lb.itertuples()]))
    page.heading(f"Concepts ({len(concepts)})")
    auroc = {}
    if not lb.empty:
        best = cat.sql("SELECT concept_set, concept_id, max(auroc) AS best, arg_max(method, auroc) AS by_method "
                       "FROM latent_auroc GROUP BY ALL").fetchall()
        auroc = {(s, c): (b, m) for s, c, b, m in best}
    rows = []
    for r in concepts.itertuples():
        b, m = auroc.get((r.concept_set, int(r.concept_id)), (None, ""))
        rows.append(f'<tr><td>{esc(r.concept_set)}</td><td class="num">{esc(r.concept_id)}</td>'
                    f'<td><a href="{esc(concept_href(r.concept_set, r.concept_id))}">{esc(r.concept)}</a></td>'
                    f'<td>{esc(r.genre)}</td><td class="num">{esc("–" if b is None else f"{b:.3f}")}</td>'
                    f"<td>{esc(m)}</td></tr>")
    page.add('<table class="data"><thead><tr><th>set</th><th>id</th><th>concept</th><th>genre</th>'
             f'<th>best AUROC</th><th>by</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')
    return page
