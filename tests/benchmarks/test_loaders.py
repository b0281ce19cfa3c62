"""Every benchmark loads from the real data; filters, sampling and bad inputs."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import build_chat_prompt, get_benchmark, list_benchmarks, load_spec
from harness.core.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("data_dir")


def _csv_rows(path: Path) -> int:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return sum(1 for _ in csv.reader(handle))


def test_counts_match_the_files(data_dir: Path) -> None:
    catqa = json.loads((data_dir / "catqa/catqa_english.json").read_text())
    expected = {
        "catqa": 3 * sum(len(q) for sub in catqa.values() for q in sub.values()),
        "harmfulqa": sum(
            len(q)
            for sub in json.loads((data_dir / "harmfulqa/harmfulqa.json").read_text()).values()
            for q in sub.values()
        ),
        "dangerousqa": len(json.loads((data_dir / "dangerousqa/toxic_outs.json").read_text())),
        "adversarialqa": len(json.loads((data_dir / "adversarialqa/adversarialqa.json").read_text())),
        "advbench": _csv_rows(data_dir / "advbench/harmful_behaviors.csv") - 1,
        "multijail": 10 * (_csv_rows(data_dir / "multijail/MultiJail.csv") - 1),
        "somf_eval": sum(len(json.loads(p.read_text())) for p in (data_dir / "somf_safety_eval").glob("*.json")),
        "gsm8k": len((data_dir / "gsm8k/test.jsonl").read_text().splitlines()),
        "humaneval": len(gzip.decompress((data_dir / "humaneval/HumanEval.jsonl.gz").read_bytes()).splitlines()),
        "xcopa_zh": len((data_dir / "xcopa_zh/test.zh.jsonl").read_text().splitlines()),
        "hh_rlhf_harmless": len(
            gzip.decompress((data_dir / "hh_rlhf_harmless/harmless-base_test.jsonl.gz").read_bytes()).splitlines()
        ),
    }
    for name, count in expected.items():
        items = get_benchmark(name).load()
        assert len(items) == count, name
        assert len({i.id for i in items}) == count, f"{name}: ids not unique"
    assert {"jsonl", "csv", "xsafety"} <= set(list_benchmarks())


def test_xsafety_all_languages_and_categories(data_dir: Path) -> None:
    items = get_benchmark("xsafety").load()
    langs = sorted(p.name for p in (data_dir / "xsafety").iterdir() if p.is_dir())
    assert sorted({i.language for i in items}) == langs
    for lang in langs:  # 14 categories x 200 rows, Bengali from xlsx, the ru typo mapped
        mine = [i for i in items if i.language == lang]
        assert len(mine) == 2800, lang
        assert len({i.category for i in mine}) == 14
    bn = [i for i in items if i.language == "bn" and i.category == "Insult"]
    assert bn[0].metadata["source_file"].endswith(".xlsx") and bn[0].prompt.strip()
    assert any(i.category == "Crimes_And_Illegal_Activities" for i in items if i.language == "ru")


def test_catqa_metadata_and_colon_quirk() -> None:
    bench = get_benchmark("catqa")
    en = bench.load(languages=["en"])
    vi = bench.load(languages=["vi"])
    assert en[0].subcategory == "Drug" and en[0].metadata["raw_subcategory"] == "Drug:"
    assert vi[0].subcategory == "Drug" and vi[0].metadata["raw_subcategory"] == "Drug"
    assert [(i.category, i.subcategory) for i in en] == [(i.category, i.subcategory) for i in vi]
    assert en[0].id == "catqa/en/1"


def test_filters_limit_and_seeded_sample() -> None:
    bench = get_benchmark("multijail")
    zh = bench.load(languages=["zh"])
    assert len(zh) == 315 and all(i.language == "zh" for i in zh)
    weapons = bench.load(languages=["en"], categories=["Weapons"])
    assert weapons and all(i.category == "Weapons" for i in weapons)
    a = bench.load(sample=20, seed=3, languages=["en"])
    b = bench.load(sample=20, seed=3, languages=["en"])
    c = bench.load(sample=20, seed=4, languages=["en"])
    assert [i.id for i in a] == [i.id for i in b] != [i.id for i in c]
    assert len(bench.load(sample=20, seed=3, limit=5, languages=["en"])) == 5
    assert [i.id for i in bench.load(limit=4)] == [i.id for i in bench.load()[:4]]


def test_unknown_language_and_category() -> None:
    with pytest.raises(ConfigError, match=r"unknown language 'xx'.*valid: en, zh, vi"):
        get_benchmark("catqa").load(languages=["xx"])
    with pytest.raises(ConfigError, match=r"unknown category 'Nope'.*Child Abuse"):
        get_benchmark("catqa").load(categories=["Nope"])


def test_missing_data_file_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REALIGN_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("REALIGN_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataError) as info:
        get_benchmark("gsm8k").load()
    message = str(info.value)
    assert str(tmp_path / "empty" / "gsm8k/test.jsonl") in message
    assert str(tmp_path / "cache" / "data" / "gsm8k/test.jsonl") in message
    assert "REALIGN_DATA_DIR" in message and "raw.githubusercontent.com/openai/grade-school-math" in message


def test_generic_jsonl_and_csv(tmp_path: Path) -> None:
    good = tmp_path / "mine.jsonl"
    good.write_text('{"q": "hello?", "lang": "en", "topic": "t1"}\n{"q": "salut?", "lang": "fr", "topic": "t2"}\n')
    bench = get_benchmark("jsonl", prompt="q", language="lang", category="topic")
    items = bench.load(data_path=good)
    assert [i.prompt for i in items] == ["hello?", "salut?"] and items[1].language == "fr"
    assert [i.id for i in bench.load(data_path=good, languages=["fr"])] == ["jsonl/fr/2"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": "ok"}\n{"q": "broken\n')
    with pytest.raises(DataError, match=r"bad.jsonl: row 2: malformed JSON"):
        get_benchmark("jsonl", prompt="q").load(data_path=bad)
    with pytest.raises(DataError, match=r"column 'question'.*columns present: q, lang, topic"):
        get_benchmark("jsonl", prompt="question").load(data_path=good)
    table = tmp_path / "mine.csv"
    table.write_text('text,label\n"a, b",1\nplain,0\n')
    assert [i.prompt for i in get_benchmark("csv", prompt="text").load(data_path=table)] == ["a, b", "plain"]
    broken = tmp_path / "broken.csv"
    broken.write_text("text,label\nfine,1\ntoo,many,fields\n")
    with pytest.raises(DataError, match=r"broken.csv: row 3: 3 fields, the header has 2"):
        get_benchmark("csv", prompt="text").load(data_path=broken)
    quoted = tmp_path / "quoted.csv"
    quoted.write_text('text,label\n"open quote,1\n')
    with pytest.raises(DataError, match=r"quoted.csv: row \d+: malformed CSV"):
        get_benchmark("csv", prompt="text").load(data_path=quoted)


def test_yaml_spec_for_a_user_file(tmp_path: Path) -> None:
    data = tmp_path / "qs.csv"
    data.write_text("question,kind\nHow?,x\nWhy?,y\n")
    spec = tmp_path / "mine.yaml"
    spec.write_text(
        f"name: mine\nkind: safety\nfields: {{prompt: question, category: kind}}\nsources: [{{path: {data}}}]\n"
    )
    items = get_benchmark(str(spec)).load(categories=["y"])
    assert [i.prompt for i in items] == ["Why?"]


def test_utility_prompts_and_chat_template(tiny_llama_factory) -> None:
    from transformers import AutoTokenizer

    gsm = get_benchmark("gsm8k").load(limit=1)[0]
    assert gsm.reference == "18" and "####" in gsm.prompt
    he = get_benchmark("humaneval").load(limit=1)[0]
    assert he.id == "humaneval/HumanEval/0" and he.metadata["entry_point"] == "has_close_elements"
    xc = get_benchmark("xcopa_zh").load(limit=1)[0]
    assert xc.prompt == "该物品用气泡包装纸包着 因为" and xc.metadata["choices"] == ["它很易碎。", "它很小。"]
    hh = get_benchmark("hh_rlhf_harmless").load(limit=1)[0]
    assert hh.metadata["history"][0]["role"] == "user"
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_factory())
    text = build_chat_prompt(gsm, tokenizer, system_prompt="Be brief.")
    assert text.startswith("<|im_start|>system\nBe brief.") and text.endswith("<|im_start|>assistant\n")
    assert gsm.prompt in text
    multi = build_chat_prompt(hh, tokenizer)
    assert multi.count("<|im_start|>user") == 1 + sum(m["role"] == "user" for m in hh.metadata["history"])


def test_builtin_specs_load_on_first_use_not_at_import() -> None:
    code = (
        "import benchmarks; r = benchmarks.BENCHMARKS; assert not r._items, 'registered at import'; "
        "names = benchmarks.list_benchmarks(); assert 'catqa' in names and 'gsm8k' in names, names"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_spec_naming_an_unknown_quirk_is_refused_when_read(tmp_path: Path) -> None:
    spec = tmp_path / "q.yaml"
    spec.write_text("name: q\nkind: utility\nquirk: gsm8\nsources:\n  - {path: a.json}\n")
    with pytest.raises(ConfigError, match=r"q\.yaml.*quirk: unknown quirk 'gsm8' \(did you mean 'gsm8k'\?\)"):
        load_spec(spec)
