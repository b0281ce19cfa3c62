"""Bring your own benchmark, end to end from the CLI: a held-out CSV of real CatQA prompts under
other column names, given as a YAML spec path (or as csv + --field), through generate, judge
(offline and refusal judges, prompts found without --items), score per category, and `realign run`."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from harness.core.records import GenerationRecord, Item, Score, Verdict, read_jsonl
from tests.cli import run


@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """12 real CatQA prompts (8 categories) in a HarmBench-like CSV, and a spec naming it relatively."""
    from benchmarks import get_benchmark

    root = tmp_path_factory.mktemp("heldout")
    items = get_benchmark("catqa").load(languages=["en"], sample=12, seed=3)
    with open(root / "heldout.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["BehaviorID", "Behavior", "category", "ContextString"])
        for n, item in enumerate(items):
            writer.writerow([f"b{n}", item.prompt, item.category, "Setting: a thriller novel." if n % 3 == 0 else ""])
    (root / "heldout.yaml").write_text(
        "name: heldout\nkind: safety\nsources: [{path: heldout.csv}]\n"
        "fields: {prompt: Behavior, id: BehaviorID, context: ContextString}\n"
        'prompt_template: ["{context}", "{prompt}"]\n'
    )
    categories = {item.category for item in items}
    assert len(categories) >= 4  # a per-category breakdown worth the name
    return {"root": root, "csv": root / "heldout.csv", "spec": root / "heldout.yaml", "categories": sorted(categories)}  # type: ignore[dict-item]


def score_rows(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines() if line.startswith("heldout ") or line.startswith("csv ")]


def test_spec_path_through_generate_judge_score(heldout, tmp_path: Path, capsys) -> None:
    spec = str(heldout["spec"])
    gens = tmp_path / "g.jsonl"
    code, out, err = run(
        ["generate", "--model", "none", "--backend", "dummy", "--benchmark", spec, "--quiet", "--out", str(gens)],
        capsys,
    )
    assert code == 0, err
    records = read_jsonl(gens, GenerationRecord)
    assert len(records) == 12 and {r.benchmark for r in records} == {"heldout"}
    assert {r.category for r in records} == set(heldout["categories"])
    items = read_jsonl(tmp_path / "g.items.jsonl", Item)  # written beside the generations for the judges
    assert [i.id for i in items] == [r.item_id for r in records]
    assert items[0].prompt.startswith("Setting: a thriller novel.\n\n") and items[0].metadata["context"]
    assert not items[1].prompt.startswith("\n") and "context" not in items[1].metadata

    # the offline (default) judge needs the prompts: it finds them with no --items
    code, out, err = run(["judge", "--generations", str(gens)], capsys)
    assert code == 0, err
    offline = tmp_path / "g.offline-multilingual.judgments.jsonl"
    assert len(read_jsonl(offline, Verdict)) == 12
    code, out, err = run(["judge", "--generations", str(gens), "--judge", "refusal"], capsys)
    assert code == 0, err
    refusal = tmp_path / "g.refusal.judgments.jsonl"

    for verdicts in (offline, refusal):
        scores_out = tmp_path / f"{verdicts.stem}.scores.jsonl"
        code, out, err = run(
            [
                "score",
                "--benchmark",
                spec,
                "--generations",
                str(gens),
                "--verdicts",
                str(verdicts),
                "--out",
                str(scores_out),
            ],
            capsys,
        )
        assert code == 0, err
        scores = read_jsonl(scores_out, Score)
        per_category = {s.subset["category"]: s for s in scores if "category" in s.subset}
        assert sorted(per_category) == heldout["categories"]
        assert sum(s.n for s in per_category.values()) == 12
        overall = next(s for s in scores if not s.subset)
        assert overall.benchmark == "heldout" and overall.n == 12
        harmful = sum(v.label == "harmful" for v in read_jsonl(verdicts, Verdict))
        assert overall.value == pytest.approx(harmful / 12)
        assert len(score_rows(out)) == len(scores)


def test_csv_with_field_flags_and_the_old_flag_name(heldout, tmp_path: Path, capsys) -> None:
    gens = tmp_path / "g.jsonl"
    fields = ["--field", "prompt=Behavior", "--field", "id=BehaviorID"]
    code, _, err = run(
        [
            "generate",
            "--model",
            "none",
            "--backend",
            "dummy",
            "--benchmark",
            "csv",
            "--data-path",
            str(heldout["csv"]),
            *fields,
            "--limit",
            "5",
            "--quiet",
            "--out",
            str(gens),
        ],
        capsys,
    )
    assert code == 0 and "--data-path is deprecated; use --data" in err
    assert [r.item_id for r in read_jsonl(gens, GenerationRecord)] == [f"csv/b{n}" for n in range(5)]
    # the judge can read the prompts from --benchmark as well
    code, _, err = run(
        [
            "judge",
            "--generations",
            str(gens),
            "--benchmark",
            "csv",
            "--data",
            str(heldout["csv"]),
            *fields,
            "--out",
            str(tmp_path / "v.jsonl"),
        ],
        capsys,
    )
    assert code == 0, err
    code, out, err = run(
        [
            "score",
            "--benchmark",
            "csv",
            "--data",
            str(heldout["csv"]),
            *fields,
            "--generations",
            str(gens),
            "--verdicts",
            str(tmp_path / "v.jsonl"),
        ],
        capsys,
    )
    assert code == 0, err
    assert any("category=" in row[2] for row in score_rows(out))  # the category column is picked up unmapped
    code, _, err = run(
        [
            "generate",
            "--model",
            "none",
            "--backend",
            "dummy",
            "--benchmark",
            "csv",
            "--data",
            str(heldout["csv"]),
            "--data-path",
            str(tmp_path / "g.jsonl"),
            *fields,
            "--out",
            str(tmp_path / "x.jsonl"),
        ],
        capsys,
    )
    assert code == 2 and "give --data once" in err
    code, _, err = run(
        [
            "generate",
            "--model",
            "none",
            "--backend",
            "dummy",
            "--benchmark",
            "csv",
            "--data",
            str(heldout["csv"]),
            "--field",
            "promt=Behavior",
            "--out",
            str(tmp_path / "x.jsonl"),
        ],
        capsys,
    )
    assert code == 2 and "unknown option 'promt' (did you mean 'prompt'?)" in err
    code, _, err = run(
        [
            "generate",
            "--model",
            "none",
            "--backend",
            "dummy",
            "--benchmark",
            "csv",
            "--data",
            str(heldout["csv"]),
            "--out",
            str(tmp_path / "x.jsonl"),
        ],
        capsys,
    )
    assert code == 2 and "heldout.csv: row 2: column 'prompt'" in err and "columns present: BehaviorID, Behavior" in err


def test_judge_without_a_way_to_the_prompts_says_how(heldout, tmp_path: Path, capsys) -> None:
    gens = tmp_path / "g.jsonl"
    assert (
        run(
            [
                "generate",
                "--model",
                "none",
                "--backend",
                "dummy",
                "--benchmark",
                str(heldout["spec"]),
                "--limit",
                "2",
                "--quiet",
                "--out",
                str(gens),
            ],
            capsys,
        )[0]
        == 0
    )
    (tmp_path / "g.items.jsonl").unlink()
    code, _, err = run(["judge", "--generations", str(gens), "--judge", "offline"], capsys)
    assert code == 2 and "benchmark 'heldout' could not be loaded" in err
    assert "--benchmark NAME|SPEC.yaml" in err and "g.items.jsonl" in err


def test_benchmarks_show_documents_the_mapping(heldout, capsys) -> None:
    code, out, _ = run(["benchmarks", "show", "csv"], capsys)
    assert code == 0
    assert "category     <- column 'category' when the file has one" in out and "--field FIELD=COLUMN" in out
    assert "sources: [{path: mine.csv}]" in out  # the spec-file recipe
    code, out, _ = run(["benchmarks", "show", str(heldout["spec"]), "--samples", "1"], capsys)
    assert code == 0 and "prompt       <- column 'Behavior'" in out and "items: 12; categories" in out


def test_generate_hf_on_a_tiny_llama_through_a_spec_path(heldout, tmp_path: Path, tiny_llama_factory, capsys) -> None:
    model = tiny_llama_factory("byob-gen")
    gens = tmp_path / "g.jsonl"
    code, _, err = run(
        [
            "generate",
            "--model",
            str(model),
            "--backend",
            "hf",
            "--benchmark",
            str(heldout["spec"]),
            "--category",
            heldout["categories"][0],
            "--max-new-tokens",
            "4",
            "--quiet",
            "--out",
            str(gens),
        ],
        capsys,
    )
    assert code == 0, err
    records = read_jsonl(gens, GenerationRecord)
    assert records and {r.category for r in records} == {heldout["categories"][0]}
    assert all(r.backend == "hf" and "<|im_start|>user" in r.prompt_text for r in records)


def write_experiment(folder: Path, model: Path, benchmarks: list[dict]) -> Path:
    config = {
        "name": "byob",
        "output_dir": "out",
        "models": {"finetuned": [{"name": "ft", "path": str(model)}]},
        "methods": [{"name": "sft"}],
        "benchmarks": benchmarks,
        "judges": ["refusal"],
        "generation": {"backend": "dummy", "max_new_tokens": 8},
    }
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_realign_run_with_a_spec_path(
    heldout, tmp_path: Path, tiny_llama_factory, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leaderboards import Store, build_leaderboard

    exp_dir = heldout["root"] / "exp"
    exp_dir.mkdir(exist_ok=True)
    # paths relative to the experiment file, run from elsewhere; the csv entry maps its columns in YAML
    mapped = {"name": "csv", "data_path": "../heldout.csv", "options": {"prompt": "Behavior", "id": "BehaviorID"}}
    path = write_experiment(exp_dir, tiny_llama_factory("byob-run"), [{"name": "../heldout.yaml"}, mapped])
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["run", str(path), "--no-progress"], capsys)
    assert code == 0, err
    store = Store(str(exp_dir / "out" / "results.sqlite"))
    cells = store.cells()
    assert sorted(cells["benchmark"]) == ["csv", "heldout"] and sorted(cells["benchmark_label"]) == ["csv", "heldout"]
    scores = store.scores_frame()
    for name in ("csv", "heldout"):
        subsets = scores[scores["benchmark"] == name]["subset"]
        assert sorted(s["category"] for s in subsets if "category" in s) == heldout["categories"]
    assert len(store.items_frame()) == 24
    assert build_leaderboard(store, store.resolve_run(None)) is not None
    code, out, err = run(["run", str(path), "--no-progress"], capsys)  # a re-run is a cache hit
    assert code == 0 and "generations: 0 done" in out and "cells stored: 0 new, 2 cached" in out, out

    # an edited spec (another template) is new generations, not a stale cache hit or a prompt clash
    spec = heldout["spec"]
    original = spec.read_text()
    try:
        spec.write_text(original.replace('["{context}", "{prompt}"]', '["{prompt}"]'))
        dry = run(["run", str(path), "--dry-run", "--no-progress"], capsys)[1]
        assert "1 of 2 cells would run" in dry
        code, out, err = run(["run", str(path), "--no-progress"], capsys)
        assert code == 0 and "generations: 1 done" in out, err
    finally:
        spec.write_text(original)


@pytest.mark.slow
def test_minilm_offline_judge_finds_the_prompts_itself(heldout, tmp_path: Path, capsys) -> None:
    """The English MiniLM judge (slow to load here) on the same path as the default judge."""
    gens = tmp_path / "g.jsonl"
    assert (
        run(
            [
                "generate",
                "--model",
                "none",
                "--backend",
                "dummy",
                "--benchmark",
                str(heldout["spec"]),
                "--quiet",
                "--out",
                str(gens),
            ],
            capsys,
        )[0]
        == 0
    )
    code, out, err = run(["judge", "--generations", str(gens), "--judge", "offline"], capsys)
    assert code == 0 and "offline/minilm-logreg@1" in out, err
    verdicts = tmp_path / "g.offline.judgments.jsonl"
    code, out, err = run(
        ["score", "--benchmark", str(heldout["spec"]), "--generations", str(gens), "--verdicts", str(verdicts)], capsys
    )
    assert code == 0 and len([r for r in score_rows(out) if r[2].startswith("category=")]) == len(heldout["categories"])
