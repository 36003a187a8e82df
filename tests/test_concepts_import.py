"""`axw concepts import`: plain lists (TXT/CSV/JSONL), Neuronpedia exports, and clear errors for bad lists."""

from __future__ import annotations

import json

import pytest

from axwarehouse.catalog import Catalog
from conftest import axw, tree_state


def _import(catalog_path, path, name="s"):
    catalog_path.parent.mkdir(parents=True, exist_ok=True)
    return axw("--catalog", catalog_path, "concepts", "import", path, "-c", name)


def _rows(catalog_path, name="s"):
    with Catalog(catalog_path, read_only=True) as cat:
        return cat.sql("SELECT concept_id, concept, genre, ref, sae_id, source FROM concepts WHERE concept_set = ? "
                       "ORDER BY concept_id", [name]).fetchall()


def test_txt_one_concept_per_line(catalog_path, tmp_path):
    p = tmp_path / "list.txt"
    p.write_text("rivers and lakes\n\n  Python exceptions  \nfractions\n")
    code, out, err = _import(catalog_path, p)
    assert code == 0, err
    assert "3 concepts" in out
    assert _rows(catalog_path) == [(0, "rivers and lakes", None, None, None, "list:list.txt"),
                                   (1, "Python exceptions", None, None, None, "list:list.txt"),
                                   (2, "fractions", None, None, None, "list:list.txt")]


def test_csv_with_header_genre_and_link(catalog_path, tmp_path):
    p = tmp_path / "list.csv"
    p.write_text("concept,ref,genre\n\"loops, iteration\",https://www.neuronpedia.org/gemma-2-2b/10-res/77,Code\n"
                 "poems,,text\n")
    assert _import(catalog_path, p)[0] == 0
    assert _rows(catalog_path) == [
        (0, "loops, iteration", "code", "https://www.neuronpedia.org/gemma-2-2b/10-res/77", 77, "list:list.csv"),
        (1, "poems", "text", None, None, "list:list.csv")]


def test_jsonl(catalog_path, tmp_path):
    p = tmp_path / "list.jsonl"
    p.write_text(json.dumps({"concept": "a", "ref": "x/1"}) + "\n" + json.dumps({"description": "b"}) + "\n")
    assert _import(catalog_path, p)[0] == 0
    assert [(r[1], r[3], r[4]) for r in _rows(catalog_path)] == [("a", "x/1", 1), ("b", None, None)]


def test_neuronpedia_export_keeps_first_explanation_per_feature(catalog_path, tmp_path):
    export = [
        {"modelId": "gemma-2-2b", "layer": "20-gemmascope-res-16k", "index": "14874", "description": "dates"},
        {"modelId": "gemma-2-2b", "layer": "20-gemmascope-res-16k", "index": "14874", "description": "calendar days"},
        {"modelId": "gemma-2-2b", "layer": "20-gemmascope-res-16k", "index": "9", "description": "code comments",
         "explanationModelName": "gpt-4o-mini"},
    ]
    p = tmp_path / "gemma-2-2b_20-gemmascope-res-16k.json"
    p.write_text(json.dumps(export))
    assert _import(catalog_path, p)[0] == 0
    assert [(r[1], r[3], r[4]) for r in _rows(catalog_path)] == [
        ("dates", "https://www.neuronpedia.org/gemma-2-2b/20-gemmascope-res-16k/14874", 14874),
        ("code comments", "https://www.neuronpedia.org/gemma-2-2b/20-gemmascope-res-16k/9", 9)]


def test_neuronpedia_style_csv_with_feature_id_and_link(catalog_path, tmp_path):
    p = tmp_path / "features.csv"
    p.write_text("feature_id,description,link\n5,legal terms,https://www.neuronpedia.org/m/l/5\n"
                 "6,sports scores,https://www.neuronpedia.org/m/l/6\n")
    assert _import(catalog_path, p)[0] == 0
    assert [(r[1], r[4]) for r in _rows(catalog_path)] == [("legal terms", 5), ("sports scores", 6)]


@pytest.mark.parametrize("name,content,msg", [
    ("dup.txt", "rivers\nlakes\nrivers\n", "duplicate concept 'rivers' (entries #1 and #3)"),
    ("empty-name.csv", "concept,ref\nrivers,\n  ,x\n", "concept #2 has an empty name"),
    ("empty.txt", "\n\n", "lists no concepts"),
    ("bad.json", "{not json", "not valid JSON"),
    ("bad.jsonl", '{"concept": "a"}\n[1, 2]\n', ":2: expected an object"),
    ("nofield.jsonl", '{"name": "a"}\n', "expected a 'concept' or 'description' field"),
    ("genre.csv", "concept,genre\na,poetry\n", "genre 'poetry'"),
    ("list.xlsx", "x", "unsupported concept list format"),
    ("dup-np.json", json.dumps([{"modelId": "m", "layer": "l", "index": 1, "description": "x"},
                                {"modelId": "m", "layer": "l", "index": 2, "description": "x"}]),
     "duplicate concept 'x'"),
])
def test_bad_lists_are_one_clear_error_and_change_nothing(catalog_path, tmp_path, name, content, msg):
    good = tmp_path / "good.txt"
    good.write_text("kept\n")
    assert _import(catalog_path, good, "keep")[0] == 0
    before = tree_state(catalog_path.parent / "warehouse")
    p = tmp_path / name
    p.write_text(content)
    code, out, err = _import(catalog_path, p)
    assert code == 2, (out, err)
    assert err.startswith("error: ") and msg in err and len(err.strip().splitlines()) == 1
    assert tree_state(catalog_path.parent / "warehouse") == before
    assert _rows(catalog_path, "keep") == [(0, "kept", None, None, None, "list:good.txt")]


def test_missing_file(catalog_path, tmp_path):
    code, _, err = _import(catalog_path, tmp_path / "nope.txt")
    assert code == 2 and "does not exist" in err
