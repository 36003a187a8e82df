"""`axw train` / `axw steer` / `axw judge` / `axw leaderboard steering` for LoReFT, LoRA and SFT on a tiny model: one
generation per instruction (the factor is ignored), grouped per (method, concept) under the method's edit."""

from __future__ import annotations

import csv
import io

from axwarehouse.catalog import Catalog
from axwarehouse.llm.fake_server import FakeChatServer
from conftest import axw, tree_state
from test_steer_stage import judge_responder

N_INPUTS = 4
SETS = ["--set", "lora.layers=1,3", "--set", "lora.epochs=1", "--set", "loreft.layers=1,3",
        "--set", "loreft.epochs=1", "--set", "sft.epochs=1", "--set", "sft.max_concepts=2"]
METHODS = ["--method", "lora", "--method", "loreft", "--method", "sft"]


def test_model_editing_methods_train_steer_and_reach_the_leaderboard(catalog_path, small_release, tiny_model_dir,
                                                                     monkeypatch):
    from axwarehouse.methods import get

    catalog_path.parent.mkdir(parents=True)
    base = ["--catalog", catalog_path]
    common = ["-c", "s3", "--model", tiny_model_dir, "--layer", "2"]
    assert axw(*base, "import-axbench", small_release, "-c", "s3")[0] == 0
    assert axw(*base, "activations", *common)[0] == 0
    code, out, err = axw(*base, "train", *common, *METHODS, *SETS)
    assert code == 0, err
    assert "train lora: 3 concepts trained" in out and "train loreft: 3 concepts trained" in out
    assert "train sft: 2 concepts trained" in out and "only the first 2 concepts" in out
    # without the --set that picks layers the tiny model has, LoRA names none of its 4 blocks
    code, _, err = axw(*base, "train", *common, "--method", "lora")
    assert code == 2 and "none of its layers" in err

    code, out, _ = axw(*base, "status")
    assert code == 0 and "steering only" in out and "MISSING latent scores" not in out
    assert not any(f"--method {m}" in line for line in out.splitlines() if "axw latent" in line
                   for m in ("lora", "loreft", "sft"))
    with Catalog(catalog_path, read_only=True) as cat:
        arts = cat.sql("SELECT method, count(*), bool_and(direction IS NULL), bool_and(weights_path IS NOT NULL) "
                       "FROM method_artifacts GROUP BY 1 ORDER BY 1").fetchall()
    assert arts == [("lora", 3, True, True), ("loreft", 3, True, True), ("sft", 2, True, True)]

    edits: list[tuple[str, int]] = []
    for name in ("lora", "loreft", "sft"):
        cls = get(name)
        real = cls.steering_edit
        monkeypatch.setattr(cls, "steering_edit", lambda self, lm, art, ctx, real=real: (
            edits.append((self.name, art.weights_path)), real(self, lm, art, ctx))[1])
    steer = [*base, "steer", *common, *METHODS, *SETS, "--factors", "0.5,2", "--instructions", str(N_INPUTS),
             "--max-new-tokens", "4", "--batch-size", "3", "--no-progress"]
    code, out, err = axw(*steer)
    assert code == 0, err
    assert "steer lora: 12 generations" in out and "steer loreft: 12 generations" in out
    assert "steer sft: 8 generations" in out
    # one edit per (method, concept), each with that concept's weights
    assert sorted(m for m, _ in edits) == ["lora"] * 3 + ["loreft"] * 3 + ["sft"] * 2
    assert len({p for _, p in edits}) == 8
    with Catalog(catalog_path, read_only=True) as cat:
        rows = cat.sql("SELECT method, concept_id, input_id, factor, magnitude, strength, split FROM steering_outputs"
                       ).fetchall()
        dupes = cat.sql("SELECT count(*) - count(DISTINCT output_id) FROM steering_outputs").fetchall()[0][0]
    assert dupes == 0 and len(rows) == 32
    assert {r[3] for r in rows} == {1.0} and all(r[4] is None and r[5] is None for r in rows)
    assert len({r[:3] for r in rows}) == 32  # one generation per (method, concept, instruction)
    assert {r[1] for r in rows if r[0] == "sft"} == {0, 1}

    before = tree_state(catalog_path.parent / "warehouse")
    code, out, _ = axw(*steer)
    assert code == 0 and "steer lora: all 12 generations already present, nothing to do" in out
    assert tree_state(catalog_path.parent / "warehouse") == before

    with FakeChatServer(responder=judge_responder) as srv:
        code, out, err = axw(*base, "judge", "--judge", "openai-compatible:fake-judge", "--judge-base-url",
                             srv.base_url, "--no-progress")
    assert code == 0, err
    code, out, err = axw(*base, "leaderboard", "steering", "--format", "csv")
    assert code == 0, err
    board = list(csv.DictReader(io.StringIO(out)))
    assert sorted(r["method"] for r in board) == ["lora", "loreft", "sft"]
    # concepts with a scored test output (the fake judge answers some ratings unparseably: those stay NULL)
    assert all(1 <= int(r["n_concepts"]) <= {"lora": 3, "loreft": 3, "sft": 2}[r["method"]] for r in board)
    assert all(float(r["mean_best_factor"]) == 1.0 for r in board)
    with Catalog(catalog_path, read_only=True) as cat:
        ppl = cat.sql("SELECT count(*) FROM output_perplexity").fetchall()[0][0]
    assert ppl == 32
