"""`axw generate` against a real chat-completions server on 127.0.0.1 (answers from fixed rules), with a tiny
random-init Llama as the target model that writes the shared negatives. Real DuckDB catalog, real Parquet."""

from __future__ import annotations

import pytest

from axwarehouse.catalog import Catalog
from axwarehouse.llm.fake_server import FakeChatServer
from axwarehouse.schemas import GENERATIONS
from conftest import axw, tree_state

CONCEPTS = ["references to rivers and lakes", "Python error handling", "fractions and ratios"]
N_TRAIN, N_EVAL, OUT_LEN, MAX_CONTRAST = 4, 8, 16, 2


@pytest.fixture(scope="session")
def target_dir(tiny_model_dir, tmp_path_factory):
    """The tiny random-init Llama, told never to emit special or whitespace-only tokens: untrained, it otherwise
    emits runs of them (empty answers after decoding), which the stage would rightly record as failures."""
    import shutil

    import transformers

    out = tmp_path_factory.mktemp("tiny-target")
    shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    gen = transformers.GenerationConfig.from_pretrained(out)
    blank = [i for i in range(len(tok)) if not tok.decode([i], skip_special_tokens=True).strip()]
    gen.suppress_tokens = sorted(set(tok.all_special_ids) | {tok.eos_token_id} | set(blank))
    gen.save_pretrained(out)
    return out


@pytest.fixture
def server():
    with FakeChatServer() as srv:
        yield srv


@pytest.fixture
def cat_path(catalog_path, tmp_path):
    catalog_path.parent.mkdir(parents=True)
    lst = tmp_path / "c3.txt"
    lst.write_text("\n".join(CONCEPTS) + "\n")
    assert axw("--catalog", catalog_path, "concepts", "import", lst, "-c", "c3")[0] == 0
    return catalog_path


def gen_args(cat_path, server, target_dir, *extra):
    return ["--catalog", cat_path, "generate", "-c", "c3", "--n-train", N_TRAIN, "--n-eval", N_EVAL,
            "--output-length", OUT_LEN, "--max-contrast", MAX_CONTRAST, "--llm", "openai-compatible:fake-4o",
            "--llm-base-url", server.base_url, "--target-model", target_dir, "--no-progress", *extra]


def generate(cat_path, server, target_dir, *extra):
    code, out, err = axw(*gen_args(cat_path, server, target_dir, *extra))
    assert code == 0, err
    return out


def test_generated_data_has_axbench_shape(cat_path, server, target_dir):
    out = generate(cat_path, server, target_dir)
    assert "3 concepts" in out and "failures: 0" in out
    with Catalog(cat_path, read_only=True) as cat:
        cols = [d[0] for d in cat.sql("SELECT * FROM generations LIMIT 0").description]
        counts = dict(((s, c), n) for s, c, n in cat.sql(
            "SELECT split, category, count(*) FROM generations GROUP BY ALL").fetchall())
        shared = cat.sql("SELECT genre, count(*), any_value(output_concept), any_value(generator_model) "
                         "FROM generations WHERE concept_id = -1 GROUP BY genre ORDER BY genre").fetchall()
        neg_genres = dict(cat.sql("SELECT genre, count(*) FROM generations WHERE split = 'latent_eval' "
                                  "AND category = 'negative' AND concept_id = 0 GROUP BY genre").fetchall())
        hard = cat.sql("SELECT output_concept FROM generations WHERE category = 'hard_negative'").fetchall()
        dup = cat.sql("SELECT count(*) - count(DISTINCT (split, example_id)) FROM generations").fetchall()[0][0]
        genres = cat.sql("SELECT genre FROM concepts WHERE concept_set = 'c3'").fetchall()
        pos_genre_ok = cat.sql("SELECT bool_and(g.genre = c.genre) FROM generations g JOIN concepts c "
                               "USING (concept_set, concept_id) WHERE g.category = 'positive'").fetchall()[0][0]
        texts = cat.sql("SELECT output FROM generations WHERE concept_id >= 0").fetchall()
        lineage = cat.sql("SELECT count(*) FROM generations WHERE run_id IS NULL OR config_hash IS NULL "
                          "OR code_version IS NULL").fetchall()[0][0]
        ledger = cat.sql("SELECT sum(calls), sum(tokens) FROM llm_costs WHERE stage = 'generate' "
                         "AND backend = 'openai-compatible'").fetchall()[0]
    assert cols == GENERATIONS.names  # every AxBench column + lineage, in schema order
    assert counts == {("train", "positive"): 3 * N_TRAIN, ("train", "negative"): 3 * N_TRAIN,
                      ("latent_eval", "positive"): 3 * N_EVAL, ("latent_eval", "negative"): 3 * N_EVAL,
                      ("latent_eval", "hard_negative"): 3 * MAX_CONTRAST}
    assert [(g, n, oc) for g, n, oc, _ in shared] == [(g, N_TRAIN, "EEEEE") for g in ("code", "math", "text")]
    assert shared[0][3] == str(target_dir.resolve())  # written by the target model, not the LLM
    assert neg_genres == {"text": N_EVAL - 2, "math": 1, "code": 1}  # int(0.15 * 8) = 1 each
    assert all("//" in oc for (oc,) in hard)  # word//meaning
    assert dup == 0 and lineage == 0 and pos_genre_ok
    assert all(g in ("text", "code", "math") for (g,) in genres)
    from axwarehouse.model.loader import load

    tok = load(str(target_dir)).tokenizer
    assert max(len(tok(t, add_special_tokens=False)["input_ids"]) for (t,) in texts) <= OUT_LEN + 2
    assert ledger[0] == server.chat_requests > 0 and ledger[1] > 0


def test_warm_rerun_makes_no_call_and_writes_nothing(cat_path, server, target_dir):
    generate(cat_path, server, target_dir)
    sent = server.chat_requests
    before = tree_state(cat_path.parent / "warehouse")
    out = generate(cat_path, server, target_dir)
    assert server.chat_requests == sent
    assert tree_state(cat_path.parent / "warehouse") == before
    assert "nothing to do" in out


def test_interrupted_concept_is_redone_from_the_cache(cat_path, server, target_dir):
    generate(cat_path, server, target_dir)
    sent = server.chat_requests
    with Catalog(cat_path) as cat:
        want = cat.sql("SELECT split, example_id, output FROM generations ORDER BY ALL").fetchall()
        n_calls = cat.count("llm_calls")
        cat.delete_where("generations", "concept_id = 1")  # as if the stage died before writing concept 1
    out = generate(cat_path, server, target_dir)
    assert "1 concepts" in out and "LLM calls 0" in out
    assert server.chat_requests == sent  # every answer replayed from llm_calls
    with Catalog(cat_path, read_only=True) as cat:
        got = cat.sql("SELECT split, example_id, output FROM generations ORDER BY ALL").fetchall()
        assert cat.count("llm_calls") == n_calls
    assert got == want  # same rows, no duplicates


def test_bad_answers_are_recorded_not_dropped(cat_path, server, target_dir):
    server.fault_for["Instruction: What are the pros and cons"] = "refuse"
    server.fault_for["OTHER MEANING"] = "empty"
    out = generate(cat_path, server, target_dir, "--max-attempts", "2")
    with Catalog(cat_path, read_only=True) as cat:
        fails = cat.sql("SELECT purpose, error, attempts, history FROM generation_failures").fetchall()
        n_fail = cat.count("generation_failures")
        n_hard = cat.count("generations", "category = 'hard_negative'")
        refused_rows = cat.count("generations", "input LIKE 'What are the pros and cons%' AND concept_id >= 0")
    assert n_fail > 0 and f"failures: {n_fail} ({n_fail} new)" in out
    assert {p for p, *_ in fails} >= {"contrast_meaning"}
    assert all(a == 2 and h.count(";") == 1 for _, _, a, h in fails)
    assert {e for _, e, *_ in fails} <= {"refused", "empty"}
    assert n_hard == 0 and refused_rows == 0  # never padded with a placeholder text
    sent = server.chat_requests
    out2 = generate(cat_path, server, target_dir, "--max-attempts", "2")
    assert server.chat_requests == sent and f"failures: {n_fail} (0 new)" in out2
    with Catalog(cat_path, read_only=True) as cat:
        assert cat.count("generation_failures") == n_fail


def test_transport_failures_are_retried_on_the_next_run(cat_path, server, target_dir):
    server.fault_for["GENRE:"] = "500"
    out = generate(cat_path, server, target_dir, "--llm-retries", "1")
    with Catalog(cat_path, read_only=True) as cat:
        fails = cat.sql("SELECT purpose, error FROM generation_failures").fetchall()
        assert cat.count("generations", "concept_id >= 0") == 0
    assert len(fails) == 3 and all(p == "genre" and "HTTP 500" in e for p, e in fails)
    assert "failures: 3" in out
    server.fault_for.clear()
    generate(cat_path, server, target_dir, "--llm-retries", "1")
    with Catalog(cat_path, read_only=True) as cat:
        assert cat.count("generation_failures") == 0  # resolved failures are removed
        assert cat.count("generations", "category = 'positive'") == 3 * (N_TRAIN + N_EVAL)


def test_dry_run_counts_calls_and_calls_nothing(cat_path, server, target_dir):
    code, out, err = axw(*gen_args(cat_path, server, target_dir, "--dry-run"))
    assert code == 0, err
    assert server.chat_requests == 0
    assert "genre                          3" in out
    assert f"train positives{3 * N_TRAIN:>17}" in out
    with Catalog(cat_path, read_only=True) as cat:
        assert cat.count("generations") == 0


def test_dry_run_prices_gpt_4o_mini(cat_path, server, target_dir, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-dry")
    code, out, _ = axw("--catalog", cat_path, "generate", "-c", "c3", "--llm", "openai:gpt-4o-mini", "--dry-run")
    assert code == 0 and server.chat_requests == 0
    total = [line for line in out.splitlines() if line.startswith("total")][0]
    cost = float(total.split("≤ $")[1].split(";")[0])
    assert 0 < cost < 0.01 * 3 * 3  # AxBench's "< $0.01 per concept", with room for the upper bound


def test_config_change_needs_replace(cat_path, server, target_dir):
    generate(cat_path, server, target_dir)
    args = gen_args(cat_path, server, target_dir)
    args[args.index("--n-train") + 1] = 3
    code, _, err = axw(*args)
    assert code == 2 and err.startswith("error: ") and "--replace" in err and len(err.strip().splitlines()) == 1
    code, _, err = axw(*args, "--replace")
    assert code == 0, err
    with Catalog(cat_path, read_only=True) as cat:
        assert cat.count("generations", "category = 'positive' AND split = 'train'") == 3 * 3


def test_bad_input_is_one_clear_error(cat_path, server, target_dir):
    for args, msg in [
        (["generate", "-c", "nope"], "no concepts"),
        (["generate", "-c", "c3", "--llm", "gpt-4o-mini"], "BACKEND:MODEL"),
        (["generate", "-c", "c3", "--llm", "openai-compatible:x"], "--llm-base-url"),
        (["generate", "-c", "c3", "--n-train", "0"], "--n-train"),
        (["generate", "-c", "c3", "--n-train", "1000"], "seed pool has"),
    ]:
        code, _, err = axw("--catalog", cat_path, *args, "--no-progress", "--target-model", target_dir)
        assert code == 2 and err.startswith("error: ") and msg in err, (args, err)
    with Catalog(cat_path, read_only=True) as cat:
        assert cat.count("generations") == 0 and cat.count("concepts") == 3


def test_imported_release_is_not_overwritten(catalog_path, small_release, server, target_dir):
    catalog_path.parent.mkdir(parents=True)
    assert axw("--catalog", catalog_path, "import-axbench", small_release, "-c", "rel")[0] == 0
    code, _, err = axw("--catalog", catalog_path, "generate", "-c", "rel", "--llm", "openai-compatible:x",
                       "--llm-base-url", server.base_url, "--target-model", target_dir, "--no-progress")
    assert code == 2 and "--replace" in err and server.chat_requests == 0


def test_api_key_is_written_nowhere(cat_path, server, target_dir, monkeypatch, capfd):
    secret = "sk-proj-SECRET-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    server.faults.extend(["401"])  # the first call fails auth: the error message must not echo the key
    args = gen_args(cat_path, server, target_dir)
    args[args.index("--llm") + 1] = "openai:gpt-4o-mini"
    code1, out1, err1 = axw(*args)
    code2, out2, err2 = axw(*args)
    assert code1 == 2 and "rejected the credentials" in err1 and code2 == 0, err2
    assert any(r.headers.get("authorization") == f"Bearer {secret}" for r in server.requests)  # it was used
    captured = capfd.readouterr()
    for text in (out1, err1, out2, err2, captured.out, captured.err):
        assert secret not in text
    root = cat_path.parent
    files = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files) and any(p.suffix == ".duckdb" for p in files)
    for p in files:
        data = p.read_bytes()
        assert secret.encode() not in data, p
        assert b"SECRET-0123" not in data, p
    with Catalog(cat_path, read_only=True) as cat:
        assert cat.count("llm_calls", "backend = 'openai' AND cost_usd > 0") > 0
        dumped = str(cat.sql("SELECT * FROM runs").fetchall()) + str(cat.sql("SELECT * FROM llm_calls").fetchall())
    assert secret not in dumped


def test_generate_demo_runs_the_latent_benchmark_on_generated_data(catalog_path, server, target_dir):
    from axwarehouse.stages.demo import DEMO_SET, run_generate_demo

    catalog_path.parent.mkdir(parents=True)
    lines: list[str] = []
    with Catalog(catalog_path) as cat:
        run_generate_demo(cat, str(target_dir), 2, echo=lines.append, methods=("diffmean",), progress=False,
                          n_train=3, n_eval=4, output_length=16, max_contrast=1,
                          llm="openai-compatible:fake", llm_base_url=server.base_url)
        auroc = cat.sql("SELECT count(*) FROM latent_auroc WHERE concept_set = ?", [DEMO_SET]).fetchall()[0][0]
    assert [line[:5] for line in lines[:5]] == ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"]
    assert auroc == 3 and "diffmean" in lines[-1]
