"""`make demo QUICK=1` end to end: the real runner on the shipped organism, then the site in Chromium."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml

from harness.core.errors import ConfigError
from harness.demo import DEMO_CONFIG, QUICK_OVERRIDES, load_demo, main, quick_variant


def test_quick_variant_is_a_subset_of_the_demo() -> None:
    full = yaml.safe_load(DEMO_CONFIG.read_text())
    quick = quick_variant(full)
    assert quick["name"] == "demo-quick"
    assert [m["name"] for m in quick["models"]["finetuned"]] == QUICK_OVERRIDES["finetuned"]
    # one method of each family, in the file's order, with the file's entries (params capped, one grid point)
    keys = [m.get("label", m["name"]) for m in full["methods"]]
    assert [m.get("label", m["name"]) for m in quick["methods"]] == [k for k in keys if k in QUICK_OVERRIDES["methods"]]
    assert len(quick["methods"]) == len(QUICK_OVERRIDES["methods"]) < len(full["methods"])
    resta = next(m for m in quick["methods"] if m["name"] == "resta")
    assert resta["grid"] == {"gamma": [1.0]}
    assert {"safe_delta", "localize_stitch"} <= {m["name"] for m in quick["methods"]}
    for small, big in zip(quick["benchmarks"], full["benchmarks"], strict=True):
        assert {k: v for k, v in small.items() if k not in ("sample", "limit")} == {
            k: v for k, v in big.items() if k not in ("sample", "limit")
        }
        assert all(small[k] <= min(big[k], QUICK_OVERRIDES["items"]) for k in ("sample", "limit") if k in big)
    assert quick["generation"] == {**full["generation"], "max_new_tokens": QUICK_OVERRIDES["max_new_tokens"]}
    somf = [m for m in quick["methods"] if m["name"] == "somf"]
    assert somf and all(m["params"]["steps"] == QUICK_OVERRIDES["somf"]["steps"] for m in somf)
    with pytest.raises(ConfigError, match=r"QUICK_OVERRIDES names method\(s\) \['safe_lora'\]"):
        quick_variant({**full, "methods": [m for m in full["methods"] if m["name"] != "safe_lora"]})
    # the full file is valid as it stands and names every method of the study
    exp = load_demo(DEMO_CONFIG, quick=False)
    assert {m.name for m in exp.methods} >= {
        "sft",
        "aligned",
        "resta",
        "resta_dare",
        "somf",
        "safe_lora",
        "task_arithmetic",
    }
    assert {m.params.get("fusion") for m in exp.methods if m.name == "somf"} == {"task_arithmetic", "ties"}


def test_demo_on_a_tiny_organism_prints_the_summary_and_its_site_opens_in_chromium(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_llama_factory, data_dir: Path
) -> None:
    """The fast version of the path below: the same entry point on tiny random Llamas (dummy generations)."""
    from harness.testing import make_finetune
    from tests.leaderboards.browser_probe import CHROMIUM, probe_site

    base = tiny_llama_factory("demo-base")
    config = {
        "name": "tiny-demo",
        "output_dir": str(tmp_path / "out"),
        "models": {
            "aligned": {"path": str(base)},
            "unaligned": {"path": str(make_finetune(base, tmp_path / "unaligned", seed=1))},
            "finetuned": [
                {"name": "math", "path": str(make_finetune(base, tmp_path / "math", seed=2)), "task": "math"}
            ],
        },
        "methods": [{"name": "sft"}, {"name": "aligned"}, {"name": "resta", "params": {"gamma": 0.5}}],
        "benchmarks": [
            {"name": "catqa", "languages": ["en"], "sample": 3},
            {"name": "task_nll", "label": "nll-code", "categories": ["code"], "limit": 2},
        ],
        "judges": ["refusal"],
        "generation": {"backend": "dummy", "max_new_tokens": 8},
    }
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["--config", str(path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    site = tmp_path / "out" / "site"
    assert lines[-1] == f"==> open {(site / 'index.html').resolve()}"
    assert any(line.startswith("| math | resta |") for line in lines)
    assert main(["--config", str(path)]) == 0
    assert "merges: 0 done, 0 cached; generations: 0 done" in capsys.readouterr().out  # all linked from the store
    if CHROMIUM is None:
        pytest.skip("chromium not installed: the site was written but not opened")
    found, _dom = probe_site(site, tmp_path / "profile")
    tables = {t["id"]: t for t in found["tables"]}
    assert tables["table-summary"]["rows"] == 3
    assert "nll-code (nll)" in tables["table-summary"]["headers"]


@pytest.mark.slow
def test_quick_demo_runs_end_to_end_and_its_site_opens_in_chromium(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    from tests.leaderboards.browser_probe import CHROMIUM, probe_site

    out = tmp_path / "demo"
    assert main(["--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    site = out / "site-quick"
    assert f"open {(site / 'index.html').resolve()}" in printed.strip().splitlines()[-1]
    assert "| math | sft |" in printed and "| math | somf_ta |" in printed  # the Markdown summary was printed
    with sqlite3.connect(out / "results.sqlite") as db:
        methods = {row[0] for row in db.execute("select distinct method from cells where status = 'done'")}
    assert methods == {"original", "sft", "aligned", "resta", "safe_lora", "somf", "localize_stitch", "safe_delta"}

    # a second run is a cache hit: nothing merged, generated or judged again
    assert main(["--quick", "--out", str(out)]) == 0
    second = capsys.readouterr().out
    assert "merges: 0 done" in second and "generations: 0 done" in second and "judgments: 0 done" in second

    if CHROMIUM is None:
        pytest.skip("chromium not installed: the site was written but not opened")
    found, dom = probe_site(site, tmp_path / "profile")
    tables = {t["id"]: t for t in found["tables"]}
    assert tables["table-summary"]["rows"] == 8  # original, aligned, sft and 5 realigned models of the math fine-tune
    assert {i["id"] for i in found["images"]} == {"plot-scatter", "plot-heatmap"}
    assert all(i["w"] > 300 for i in found["images"])
    assert "somf_ta" in dom and "safe_delta" in dom
