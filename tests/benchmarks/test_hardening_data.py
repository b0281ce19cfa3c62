"""Issue 11, "paths and data": each input here was accepted silently (or wrote outside the cache)
before the fix; now each is a clear error naming the file, field or row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import get_benchmark, load_spec
from benchmarks._sources import _download
from harness.cli import main as realign
from harness.core.errors import ConfigError, DataError
from harness.core.records import GenerationRecord

pytestmark = pytest.mark.usefixtures("data_dir")
SHA = "0" * 64


def _spec(tmp_path: Path, source: str, extra: str = "") -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(f"name: custom\nkind: safety\nsources:\n  - {source}\n{extra}")
    return path


@pytest.mark.parametrize(
    "source",
    [
        f"{{path: ../../escape.json, url: 'http://127.0.0.1:9/x', sha256: '{SHA}'}}",
        f"{{path: /tmp/abs.json, url: 'http://127.0.0.1:9/x', sha256: '{SHA}'}}",
    ],
)
def test_source_path_outside_the_cache_is_refused(tmp_path, source):
    with pytest.raises(ConfigError, match=r"must be relative to the data dir, without '\.\.'"):
        load_spec(_spec(tmp_path, source))


def test_url_without_sha256_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"a url needs a sha256"):
        load_spec(_spec(tmp_path, "{path: custom/x.json, url: 'http://127.0.0.1:9/x'}"))


def test_download_target_is_confined_and_pinned(tmp_path, monkeypatch):
    monkeypatch.setenv("REALIGN_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="outside the cache directory"):
        _download("http://127.0.0.1:9/x", tmp_path / "cache" / "data" / ".." / ".." / "evil.json", SHA)
    with pytest.raises(DataError, match="no sha256 pinned"):
        _download("http://127.0.0.1:9/x", tmp_path / "cache" / "data" / "ok.json", None)
    assert not (tmp_path / "evil.json").exists()


def test_duplicate_yaml_keys_are_an_error(tmp_path):
    path = _spec(tmp_path, "{path: custom/x.json}", "kind: utility\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'kind' \(first on line 2, again on line 5\)"):
        load_spec(path)


def test_data_path_file_for_a_multi_source_benchmark_is_an_error(tmp_path):
    one = tmp_path / "mine.json"
    one.write_text(json.dumps([{"Question": "q", "Category": "c", "Subcategory": "s"}]))
    with pytest.raises(ConfigError, match=r"benchmark 'catqa' reads 3 source files .* is one file"):
        get_benchmark("catqa").load(data_path=one)


def test_unknown_benchmark_option_is_an_error():
    with pytest.raises(ConfigError, match=r"unknown option 'promt' \(did you mean 'prompt'\?\)"):
        get_benchmark("catqa", promt="Question")


@pytest.mark.parametrize(("value", "shown"), [(None, "null"), (12, "int 12")])
def test_null_or_numeric_prompt_is_an_error_naming_file_and_row(tmp_path, value, shown):
    spec = tmp_path / "own.yaml"
    spec.write_text("name: own\nkind: safety\n")
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"prompt": "fine"}) + "\n" + json.dumps({"prompt": value}) + "\n")
    with pytest.raises(DataError, match=rf"rows.jsonl: row 2: prompt column 'prompt' is {shown}; expected text"):
        load_spec(spec).load(data_path=data)


def _gens(path: Path, benchmark: str, n: int, copies: int = 1) -> Path:
    items = get_benchmark(benchmark).load(limit=n)
    lines = [
        GenerationRecord(
            item_id=i.id,
            benchmark=benchmark,
            prompt_text=i.prompt,
            prompt_hash="h",
            completion="4",
            model_hash="m",
            gen_config_hash="g",
            backend="dummy",
        ).model_dump_json()
        for i in items
    ]
    path.write_text("".join(line + "\n" for line in lines * copies))
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty", "no records; nothing to score"),
        ("other", "is for benchmark 'catqa', not 'gsm8k'"),
        ("duplicated", "repeats item"),
    ],
)
def test_score_refuses_empty_foreign_or_duplicated_files(tmp_path, capsys, case, message):
    path = tmp_path / "g.jsonl"
    if case == "empty":
        path.write_text("")
    elif case == "other":
        _gens(path, "catqa", 3)
    else:
        _gens(path, "gsm8k", 3, copies=2)
    with pytest.raises(SystemExit) as exit_info:
        realign(["score", "--benchmark", "gsm8k", "--generations", str(path)])
    assert exit_info.value.code != 0
    assert message in capsys.readouterr().err


def test_score_of_a_clean_file_still_works(tmp_path, capsys):
    realign(["score", "--benchmark", "gsm8k", "--generations", str(_gens(tmp_path / "g.jsonl", "gsm8k", 3))])
    assert "n=3" in capsys.readouterr().out


def test_yaml_merge_keys_still_work_and_may_be_overridden():
    """`<<: *anchor` (configs/demo.yaml uses it) is not a duplicate; a key given twice by hand still is."""
    from harness.core.yaml_strict import load_yaml

    text = "base: &b {fusion: ta, steps: 16}\nvariant: {<<: *b, fusion: ties}\n"
    assert load_yaml(text, "x.yaml")["variant"] == {"fusion": "ties", "steps": 16}
    with pytest.raises(ConfigError, match="duplicate key 'fusion'"):
        load_yaml("variant: {fusion: ta, fusion: ties}\n", "x.yaml")


def test_the_demo_experiment_loads_through_realign_run_s_loader():
    from pathlib import Path

    from harness.experiment import load_experiment

    exp = load_experiment(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml")
    assert {m.label for m in exp.methods if m.name == "somf"} == {"somf_ta", "somf_ties"}
