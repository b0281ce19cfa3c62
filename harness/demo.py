"""`make demo`: the whole study end to end, offline, on the shipped model organism.

Runs the experiment in ``configs/demo.yaml`` with the matrix runner (`realign run`): every method
× every shipped fine-tune × CatQA en/zh, HarmfulQA, XSafety-en (categories θ_A never saw), XSTest
(harmfulness on its unsafe prompts, over-refusal on its safe ones) and held-out task NLL, judged by
the default offline-multilingual judge (primary, en and zh) and the refusal judge; writes the SQLite
store and the static leaderboard site, prints the Markdown
leaderboard and ends with the path to open. Every artifact is cached by content, so a second run is
a cache hit. ``--quick`` runs the same file on the subset in ``QUICK_OVERRIDES``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from harness.core.errors import ConfigError, RealignError
from harness.core.yaml_strict import load_yaml
from harness.experiment import parse_experiment, run_experiment
from leaderboards import Store, build_leaderboard, render_leaderboard

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "demo.yaml"

#: `make demo QUICK=1`: one fine-tune (math), one method of each family, 3 items per benchmark, 16-token
#: answers, a token SOMF mask training. Measured from clean caches on the idle 2-core box: every method
#: of the file at 5 items and 32 tokens took 663 s (17 checkpoints); these 7 methods at 5 items 310 s,
#: at 4 items 273 s and 307 s, at 3-4 items and 24 tokens 282-285 s: too close to the 5 min aim. Items
#: barely matter (a decode step reads every weight: ~110 ms per step at batch 3 here); steps do.
QUICK_OVERRIDES: dict[str, Any] = {
    "finetuned": ["math"],
    # entries by leaderboard key (label, else name): the two references, a task-vector method, the
    # subspace projection, SOMF, a data-free and a calibrated later method
    "methods": ["sft", "aligned", "resta", "safe_lora", "somf_ta", "localize_stitch", "safe_delta"],
    "grid": {"resta": {"gamma": [1.0]}},  # one grid point: the papers' default
    "items": 3,
    "max_new_tokens": 16,
    "somf": {"steps": 2, "max_pairs": 8},
    # calibrated methods: a token calibration (the full demo's sizes are in configs/demo.yaml)
    "calibration": {"calibration_examples": 4, "calibration_max_length": 64, "icv_examples": 8, "icv_max_length": 64},
}


def _quick_params(method: dict[str, Any]) -> dict[str, Any]:
    params = dict(method.get("params", {}))
    if method["name"] == "somf":
        params.update(QUICK_OVERRIDES["somf"])
    for key, cap in QUICK_OVERRIDES["calibration"].items():
        if key in params:
            params[key] = min(int(params[key]), cap)
    return params


def quick_variant(data: dict[str, Any]) -> dict[str, Any]:
    """The demo experiment restricted to ``QUICK_OVERRIDES`` (a new name, so both runs stay in the store)."""
    out = dict(data, name=f"{data['name']}-quick")
    models = dict(out["models"])
    models["finetuned"] = [m for m in models["finetuned"] if m["name"] in QUICK_OVERRIDES["finetuned"]]
    out["models"] = models
    items = QUICK_OVERRIDES["items"]
    out["benchmarks"] = [
        {**b, **{k: min(int(b[k]), items) for k in ("sample", "limit") if k in b}} for b in data["benchmarks"]
    ]
    out["generation"] = {**data.get("generation", {}), "max_new_tokens": QUICK_OVERRIDES["max_new_tokens"]}
    missing = sorted(set(QUICK_OVERRIDES["methods"]) - {_method_key(m) for m in data["methods"]})
    if missing:
        raise ConfigError(f"QUICK_OVERRIDES names method(s) {missing} that the demo file does not have")
    out["methods"] = [_quick_method(m) for m in data["methods"] if _method_key(m) in QUICK_OVERRIDES["methods"]]
    return out


def _method_key(method: dict[str, Any]) -> str:
    return str(method.get("label") or method["name"])


def _quick_method(method: dict[str, Any]) -> dict[str, Any]:
    out = {**method, "params": _quick_params(method)} if "params" in method or method["name"] == "somf" else method
    grid = QUICK_OVERRIDES["grid"].get(_method_key(method))
    return {**out, "grid": grid} if grid is not None and "grid" in method else out


def load_demo(config: Path, quick: bool, output_dir: Path | None = None) -> Any:

    if not config.is_file():
        raise ConfigError(f"{config}: demo experiment file not found")
    data = load_yaml(config.read_text(encoding="utf-8"), str(config))
    if output_dir is not None:
        data["output_dir"] = str(output_dir.resolve())
    return parse_experiment(
        quick_variant(data) if quick else data, source=str(config), base_dir=config.parent.resolve()
    )


def summary_markdown(markdown: str) -> str:
    """The leaderboard's title, notes and summary table: the part worth printing to a terminal."""
    sections = markdown.split("\n## ")
    return "\n## ".join(sections[:2]).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the QUICK_OVERRIDES subset (about 5 minutes)")
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG, help="experiment file (default: configs/demo.yaml)")
    parser.add_argument("--out", type=Path, default=None, help="artifacts and store (default: the file's output_dir)")
    parser.add_argument(
        "--site", type=Path, default=None, help="leaderboard site folder (default: <output_dir>/site[-quick])"
    )
    args = parser.parse_args(argv)

    import logging

    import torch

    # The runner's progress lines ("checkpoint resta on math: 6 cells done"), timestamped.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("realign").setLevel(logging.INFO)
    torch.set_num_threads(1)  # measured: 1 thread decodes several times faster on this shared 2-core box

    started = time.monotonic()
    try:
        exp = load_demo(args.config, args.quick, args.out)
        todo = exp.models.finetuned
        print(
            f"==> {exp.name}: {len(exp.methods)} methods x {len(todo)} fine-tuned model(s) "
            f"({', '.join(m.name for m in todo)}) x {len(exp.benchmarks)} benchmarks, judges {', '.join(exp.judges)}",
            flush=True,
        )
        result = run_experiment(exp, progress=sys.stderr.isatty())
        print(f"==> run {result.run_id}: {result.stats.summary()}", flush=True)
        store = Store(result.store_location)
        board = build_leaderboard(store, result.run_id)
        site = args.site or exp.output_path / ("site-quick" if args.quick else "site")
        render_leaderboard(board, site)
    except RealignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print()
    print(summary_markdown((site / "leaderboard.md").read_text(encoding="utf-8")))
    print(f"(every table — by language, category, judge, utility, provenance — in {site / 'leaderboard.md'})")
    print(f"==> done in {time.monotonic() - started:.0f} s; store {result.store_location}")
    print(f"==> open {(site / 'index.html').resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
