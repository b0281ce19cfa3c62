"""A deterministic synthetic experiment written through the store's public write API.

5 methods × 2 fine-tuned models × (2 safety benchmarks + 1 utility benchmark with per-item outcomes
+ 1 utility benchmark with an aggregate only) × 40 items. Which items are harmful is a fixed
function of (method, fine-tuned model, benchmark), so tests can compute every aggregate by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from harness.core.hashing import hash_value
from harness.core.records import GenerationRecord, Score, Verdict
from harness.core.roles import ReferenceRole
from leaderboards import CellRecord, ItemScore, Store, collect_provenance

N_ITEMS = 40
# what the runner records on the cells of its baselines (MethodInfo.reference_role)
REFERENCE_ROLES = {"original": ReferenceRole.ORIGINAL, "aligned": ReferenceRole.ALIGNED, "sft": ReferenceRole.FINETUNED}

METHODS = {  # method label -> (canonical method, params)
    "aligned": ("aligned", {}),
    "sft": ("sft", {}),
    "resta[g=0.5]": ("resta", {"gamma": 0.5}),
    "somf_ta": ("somf", {"fusion": "ta", "lam": 0.3}),
    "ta[l=0.3]": ("task_arithmetic", {"lam": 0.3}),
}
FINETUNED = {"ft-code": "code", "ft-math": "math"}
BENCHMARK_TASK = {"gsm8k": "math", "humaneval": "code"}  # the `task:` of each utility benchmark entry
SAFETY = ("catqa", "harmfulqa")
CATEGORIES = ("illegal", "malware", "physical_harm", "privacy")
JUDGE = "offline-minilm@1"
PAIR_JUDGE = "pairwise-offline@1"

# harmful items out of 40, per method label and benchmark; ft-math adds MATH_SHIFT (aligned excepted)
HARMFUL = {
    "aligned": {"catqa": 4, "harmfulqa": 2},
    "sft": {"catqa": 32, "harmfulqa": 30},
    "resta[g=0.5]": {"catqa": 12, "harmfulqa": 10},
    "somf_ta": {"catqa": 8, "harmfulqa": 8},
    "ta[l=0.3]": {"catqa": 20, "harmfulqa": 22},
}
MATH_SHIFT = 4
CORRECT = {"aligned": 12, "sft": 30, "resta[g=0.5]": 27, "somf_ta": 28, "ta[l=0.3]": 24}  # gsm8k, of 40
PASS_AT_1 = {"aligned": 0.10, "sft": 0.40, "resta[g=0.5]": 0.36, "somf_ta": 0.38, "ta[l=0.3]": 0.30}  # humaneval


def cost(label: str, benchmark: str) -> dict[str, float | int]:
    """The synthetic cell's recorded cost: a merge per checkpoint (SOMF also trains its mask), and
    generation/judging/scoring per benchmark; the utility benchmarks are not judged."""
    rank = list(METHODS).index(label)
    safety = benchmark in SAFETY
    return {
        "merge_seconds": 0.0 if METHODS[label][0] in ("sft", "aligned") else 10.0 + rank,
        "train_seconds": 100.0 if METHODS[label][0] == "somf" else 0.0,
        "generate_seconds": 0.0 if benchmark == "humaneval" else 2.0 + rank,
        "judge_seconds": 1.0 if safety else 0.0,
        "score_seconds": 0.5,
        "tokens_generated": 0 if benchmark == "humaneval" else 40 * (rank + 1),
    }


def harmful_count(label: str, finetuned: str, benchmark: str) -> int:
    shift = MATH_SHIFT if finetuned == "ft-math" and label != "aligned" else 0
    return HARMFUL[label][benchmark] + shift


def _rank(index: int) -> int:
    return (index * 13) % N_ITEMS  # a permutation of 0..39: harmful sets are nested as k grows


def item_id(benchmark: str, index: int) -> str:
    return f"{benchmark}-{index:03d}"


def harmful_items(label: str, finetuned: str, benchmark: str) -> set[str]:
    k = harmful_count(label, finetuned, benchmark)
    return {item_id(benchmark, i) for i in range(N_ITEMS) if _rank(i) < k}


def language(benchmark: str, index: int) -> str:
    return ("en", "zh")[index % 2] if benchmark == "catqa" else "en"


def category(index: int) -> str:
    return CATEGORIES[index % len(CATEGORIES)]


def cell_id(label: str, finetuned: str, benchmark: str, salt: str = "") -> str:
    return hash_value({"label": label, "finetuned": finetuned, "benchmark": benchmark, "salt": salt}, 32)


def _cell(label: str, finetuned: str, benchmark: str, kind: str, salt: str) -> CellRecord:
    method, params = METHODS[label]
    return CellRecord(
        cell_id=cell_id(label, finetuned, benchmark, salt),
        method=method,
        method_label=label,
        reference_role=REFERENCE_ROLES.get(method),
        params=params,
        finetuned=finetuned,
        task=FINETUNED[finetuned],
        checkpoint_hash=hash_value([label, finetuned], 32),
        benchmark=benchmark,
        benchmark_kind=kind,  # type: ignore[arg-type]
        benchmark_options={
            "limit": N_ITEMS,
            **({"task": BENCHMARK_TASK[benchmark]} if benchmark in BENCHMARK_TASK else {}),
        },
        backend="dummy",
        gen_config_hash="gen0",
        judge_id=JUDGE if kind == "safety" else None,
        judge_hash="jh0" if kind == "safety" else None,
        chat_template_hash="tmpl0",
        primary_metric="exact_match" if benchmark == "gsm8k" else None,
        **cost(label, benchmark),
    )


def _generation(label: str, finetuned: str, benchmark: str, index: int, harmful: bool) -> GenerationRecord:
    answer = "Sure, here is exactly how to do it, step by step." if harmful else "I can't help with that request."
    return GenerationRecord(
        item_id=item_id(benchmark, index),
        benchmark=benchmark,
        prompt_text=f"<user>{benchmark} prompt {index}</user>",
        prompt_hash=hash_value([benchmark, index]),
        completion=f"[{label} on {finetuned}] {answer}",
        model_hash=hash_value([label, finetuned]),
        gen_config_hash="gen0",
        backend="dummy",
        language=language(benchmark, index),
        category=category(index) if benchmark in SAFETY else None,
    )


def write_synthetic_run(
    store: Store,
    *,
    name: str = "synthetic",
    flips: Mapping[tuple[str, str, str], Iterable[str]] | None = None,
    salt: str = "",
    methods: Iterable[str] = tuple(METHODS),
    finish: bool = True,
) -> str:
    """Write one run. ``flips[(label, finetuned, benchmark)]`` = item ids turned harmless → harmful."""
    flips = {k: set(v) for k, v in (flips or {}).items()}
    methods = list(methods)
    run_id = store.begin_run(
        name,
        {"name": name, "methods": sorted(METHODS), "salt": salt},
        collect_provenance(seeds={"seed": 0}, device="cpu (synthetic)"),
    )
    for label in methods:
        for finetuned in FINETUNED:
            for benchmark in SAFETY:
                harmful = harmful_items(label, finetuned, benchmark) | flips.get((label, finetuned, benchmark), set())
                gens, verdicts = [], []
                for i in range(N_ITEMS):
                    is_harmful = item_id(benchmark, i) in harmful
                    gens.append(_generation(label, finetuned, benchmark, i, is_harmful))
                    verdicts.append(
                        Verdict(
                            item_id=item_id(benchmark, i),
                            judge_id=JUDGE,
                            judge_hash="jh0",
                            label="harmful" if is_harmful else "harmless",
                            score=float(is_harmful),
                        )
                    )
                    if label.startswith("somf") and benchmark == "catqa":  # SOMF-style pairwise vs the base model
                        pair_label = ("win", "loss", "draw")[_rank(i) % 3] if _rank(i) < 30 else "win"
                        verdicts.append(
                            Verdict(
                                item_id=item_id(benchmark, i), judge_id=PAIR_JUDGE, judge_hash="pj0", label=pair_label
                            )
                        )
                store.write_cell(
                    run_id,
                    _cell(label, finetuned, benchmark, "safety", salt),
                    gens,
                    verdicts,
                    [
                        Score(
                            benchmark=benchmark,
                            metric="harmfulness",
                            value=len(harmful) / N_ITEMS,
                            n=N_ITEMS,
                            higher_is_better=False,
                        )
                    ],
                )
            correct = CORRECT[label] - (2 if finetuned == "ft-code" else 0)
            outcomes = [
                ItemScore(item_id=item_id("gsm8k", i), metric="exact_match", value=float(_rank(i) < correct))
                for i in range(N_ITEMS)
            ]
            gsm_gens = [
                GenerationRecord(
                    item_id=item_id("gsm8k", i),
                    benchmark="gsm8k",
                    prompt_text=f"q{i}",
                    prompt_hash=hash_value(["gsm8k", i]),
                    completion=f"#### {i if _rank(i) < correct else -1}",
                    model_hash=hash_value([label, finetuned]),
                    gen_config_hash="gen0",
                    backend="dummy",
                    language="en",
                )
                for i in range(N_ITEMS)
            ]
            store.write_cell(
                run_id,
                _cell(label, finetuned, "gsm8k", "utility", salt),
                gsm_gens,
                [],
                [
                    Score(benchmark="gsm8k", metric="exact_match", value=correct / N_ITEMS, n=N_ITEMS),
                    Score(benchmark="gsm8k", metric="invalid_rate", value=0.0, n=N_ITEMS, higher_is_better=False),
                ],
                item_scores=outcomes,
            )
            store.write_cell(
                run_id,
                _cell(label, finetuned, "humaneval", "utility", salt),
                [],
                [],
                [Score(benchmark="humaneval", metric="pass@1", value=PASS_AT_1[label], n=20)],
            )
    if finish:
        store.finish_run(run_id, "done", counts={"cell_stored": len(methods) * len(FINETUNED) * 4})
    return run_id


def build_store(path: Path, **kwargs: object) -> tuple[Store, str]:
    store = Store(path)
    return store, write_synthetic_run(store, **kwargs)  # type: ignore[arg-type]


# -- a crowded run shaped like `make demo`'s: many methods at close harmfulness, every utility 0 -------------
DEMO_METHODS = {  # label -> (method, params, harmful of 20 on catqa for the two fine-tunes)
    "aligned": ("aligned", {}, (3, 3)),
    "sft": ("sft", {}, (15, 16)),
    "resta(gamma=0.5)": ("resta", {"gamma": 0.5}, (17, 15)),
    "resta(gamma=1.0)": ("resta", {"gamma": 1.0}, (14, 12)),
    "resta_dare": ("resta_dare", {"gamma": 1.0, "p": 0.3}, (14, 13)),
    "safe_lora": ("safe_lora", {"threshold": 0.35}, (10, 11)),
    "somf_ta": ("somf", {"fusion": "task_arithmetic"}, (13, 12)),
    "somf_ties": ("somf", {"fusion": "ties"}, (13, 13)),
    "task_arithmetic": ("task_arithmetic", {"lam": 0.5}, (16, 16)),
}


def write_demo_like_run(store: Store, name: str = "demo-like") -> str:
    """9 methods × 2 fine-tunes × catqa (20 items, en) + gsm8k whose exact match is 0 everywhere, scored
    overall and per language as the runner's scorer does (so every utility row has an identical en twin)."""
    run_id = store.begin_run(name, {"name": name}, collect_provenance(seeds={"seed": 0}, device="cpu (synthetic)"))

    def demo_cell(label: str, finetuned: str, benchmark: str, kind: str) -> CellRecord:
        method, params, _ = DEMO_METHODS[label]
        return CellRecord(
            cell_id=cell_id(label, finetuned, benchmark, name),
            method=method,
            method_label=label,
            reference_role=REFERENCE_ROLES.get(method),
            params=params,
            finetuned=finetuned,
            task=FINETUNED[finetuned],
            checkpoint_hash=hash_value([label, finetuned], 32),
            benchmark=benchmark,
            benchmark_kind=kind,  # type: ignore[arg-type]
            benchmark_options={"limit": 20},
            backend="dummy",
            gen_config_hash="gen0",
            judge_id=JUDGE if kind == "safety" else None,
            judge_hash="jh0" if kind == "safety" else None,
            primary_metric="exact_match" if benchmark == "gsm8k" else None,
        )

    for label, (_, _, harmful) in DEMO_METHODS.items():
        for f_index, finetuned in enumerate(FINETUNED):
            gens, verdicts = [], []
            for i in range(20):
                is_harmful = i < harmful[f_index]
                gens.append(
                    GenerationRecord(
                        item_id=item_id("catqa", i),
                        benchmark="catqa",
                        prompt_text=f"q{i}",
                        prompt_hash=hash_value(["c", i]),
                        completion="Sure." if is_harmful else "No.",
                        model_hash=hash_value([label, finetuned]),
                        gen_config_hash="gen0",
                        backend="dummy",
                        language="en",
                        category=category(i),
                    )
                )
                verdicts.append(
                    Verdict(
                        item_id=item_id("catqa", i),
                        judge_id=JUDGE,
                        judge_hash="jh0",
                        label="harmful" if is_harmful else "harmless",
                    )
                )
            store.write_cell(run_id, demo_cell(label, finetuned, "catqa", "safety"), gens, verdicts, [])
            gsm = [
                GenerationRecord(
                    item_id=item_id("gsm8k", i),
                    benchmark="gsm8k",
                    prompt_text=f"g{i}",
                    prompt_hash=hash_value(["g", i]),
                    completion="#### 7",
                    model_hash=hash_value([label, finetuned]),
                    gen_config_hash="gen0",
                    backend="dummy",
                    language="en",
                )
                for i in range(20)
            ]
            scores = [
                Score(benchmark="gsm8k", metric=m, value=0.0, n=20, subset=subset)
                for m in ("exact_match", "flexible_match")
                for subset in ({}, {"language": "en"})
            ]
            store.write_cell(run_id, demo_cell(label, finetuned, "gsm8k", "utility"), gsm, [], scores)
    store.finish_run(run_id, "done")
    return run_id
