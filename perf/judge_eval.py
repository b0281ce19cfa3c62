"""Judge quality on held-out labelled responses: the offline judge vs the refusal judges, same items.

    .venv/bin/python perf/judge_eval.py              # the full held-out split of the shipped weights
    .venv/bin/python perf/judge_eval.py --limit 200 --benign-limit 50  # seeded samples (what the test runs)

Data: PKU-SafeRLHF safety labels (SOMF's pairs, ``pku_saferlhf_realign_somf``), held-out prompts
of the split recorded in the offline judge's manifest (never seen in training). Harmful is the
positive class. Prints accuracy / precision / recall / F1 per judge; pairwise accuracy on the
held-out (safe, unsafe) answer pairs to one prompt — how often the judge gives the unsafe answer
the higher P(harmful), which is what SOMF's pairwise score needs; the share of held-out benign
answers (Alpaca-GPT4 answers to benign instructions) called harmful; and each judge's speed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def _sample(examples: list[Any], limit: int | None, seed: int) -> list[Any]:
    if limit is None or limit >= len(examples):
        return examples
    picked = np.random.default_rng(seed).choice(len(examples), size=limit, replace=False)
    return [examples[i] for i in sorted(picked)]


def _records(examples: list[Any], benchmark: str) -> tuple[dict[str, Any], list[Any]]:
    from harness.core.records import GenerationRecord, Item

    items = {
        f"{benchmark}-{i}": Item(id=f"{benchmark}-{i}", benchmark=benchmark, prompt=e.prompt)
        for i, e in enumerate(examples)
    }
    gens = [
        GenerationRecord(
            item_id=f"{benchmark}-{i}",
            benchmark=benchmark,
            prompt_text=e.prompt,
            prompt_hash="-",
            completion=e.response,
            model_hash="-",
            gen_config_hash="-",
            backend="data",
        )
        for i, e in enumerate(examples)
    ]
    return items, gens


def evaluate(
    limit: int | None = None, seed: int = 0, data: str | None = None, benign_limit: int | None = None
) -> dict[str, Any]:
    from benchmarks.judges import binary_metrics, get_judge, heldout_examples

    held = _sample(heldout_examples(data=data), limit, seed)
    benign = _sample(heldout_examples(source="benign"), benign_limit, seed)
    items, gens = _records(held, "pku_saferlhf")
    benign_items, benign_gens = _records(benign, "alpaca")
    truth = [e.harmful for e in held]
    results: dict[str, Any] = {"n": len(held), "positives": int(sum(truth)), "benign_n": len(benign), "judges": {}}
    scores: dict[str, list[float]] = {}
    for name, options in (
        ("offline", {}),
        ("offline-multilingual", {}),
        ("refusal", {"list": "gcg"}),
        ("refusal", {"list": "harmbench"}),
    ):
        judge = get_judge(name, **options)
        started = time.perf_counter()
        verdicts = judge.judge(gens, items)
        seconds = time.perf_counter() - started
        benign_verdicts = judge.judge(benign_gens, benign_items)
        results["judges"][judge.id] = {
            **binary_metrics(truth, [v.label == "harmful" for v in verdicts]),
            "benign_false_positive_rate": float(np.mean([v.label == "harmful" for v in benign_verdicts])),
            "seconds": seconds,
            "items_per_s": len(gens) / seconds if seconds else float("inf"),
            "hash": judge.hash,
        }
        scores[judge.id] = [v.score if v.score is not None else 0.5 for v in verdicts]
    # pairwise: both answers of a held-out pair present -> does the unsafe one score higher?
    index = {(e.prompt, e.response): i for i, e in enumerate(held)}
    pairs = []
    for e in held:
        if e.harmful:
            continue
        for other in held:
            if other.harmful and other.prompt == e.prompt and (e.prompt, other.response) in index:
                pairs.append((index[(e.prompt, e.response)], index[(other.prompt, other.response)]))
    results["pairs"] = len(pairs)
    for judge_id, s in scores.items():
        if pairs:
            wins = sum(s[unsafe] > s[safe] for safe, unsafe in pairs)
            ties = sum(s[unsafe] == s[safe] for safe, unsafe in pairs)
            results["judges"][judge_id]["pairwise_accuracy"] = (wins + 0.5 * ties) / len(pairs)
    return results


ORGANISM_LABELS = Path(__file__).resolve().parents[1] / "tests" / "data" / "judge_labels" / "organism_demo_labels.jsonl"


def _organism_sets() -> dict[str, list[Any]]:
    """The 200 hand-labelled organism generations (in-domain), one set per language."""
    from benchmarks.judges._offline import LabelledResponse

    by_lang: dict[str, list[Any]] = {}
    for line in ORGANISM_LABELS.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        by_lang.setdefault(f"organism_{row['language']}", []).append(
            LabelledResponse(row["prompt"], row["response"], bool(row["label"]))
        )
    return by_lang


def evaluate_sets(limit: int | None = None, seed: int = 0, data: str | None = None) -> dict[str, Any]:
    """Every judge (old offline, new offline-multilingual, refusal gcg/harmbench) on every labelled dev set.

    Sets (none in the multilingual judge's training): gptfuzz evaluate.csv, JAILJUDGE mini, JADE-zh dev
    questions, XSTest full refusals (all harmless), PKU held-out prompts, and the 200 hand-labelled
    organism generations (en, zh). ``limit``: seeded sample per set. The llm/api judges need a served
    judge model and are measured with `realign judge validate` instead.
    """
    from benchmarks.judges import binary_metrics, get_judge
    from benchmarks.judges._multilingual import labelled_sets

    _, dev = labelled_sets(data)
    dev.update(_organism_sets())
    judges = [
        get_judge("offline"),
        get_judge("offline-multilingual"),
        get_judge("refusal", list="gcg"),
        get_judge("refusal", list="harmbench"),
    ]
    out: dict[str, Any] = {}
    for set_name, examples in dev.items():
        sample = _sample(examples, limit, seed)
        items, gens = _records(sample, set_name)
        truth = [e.harmful for e in sample]
        out[set_name] = {}
        for judge in judges:
            verdicts = judge.judge(gens, items)
            out[set_name][judge.id] = {
                **binary_metrics(truth, [v.label == "harmful" for v in verdicts]),
                "called_harmful": float(np.mean([v.label == "harmful" for v in verdicts])),
            }
    return out


def render_sets(results: dict[str, Any]) -> str:
    lines = [f"{'set':20s} {'judge':44s} {'n':>5s} {'acc':>6s} {'prec':>6s} {'recall':>6s} {'F1':>6s} {'harmful%':>8s}"]
    for set_name, by_judge in results.items():
        for judge_id, m in by_judge.items():
            lines.append(
                f"{set_name:20s} {judge_id:44s} {m['n']:5d} {m['accuracy']:6.3f} {m['precision']:6.3f} "
                f"{m['recall']:6.3f} {m['f1']:6.3f} {m['called_harmful']:8.3f}"
            )
    return "\n".join(lines)


def render(results: dict[str, Any]) -> str:
    lines = [
        f"held-out labelled responses: {results['n']} ({results['positives']} harmful); "
        f"same-prompt (safe, unsafe) pairs among them: {results['pairs']}",
        f"benign held-out answers (Alpaca-GPT4, all harmless): {results['benign_n']}",
        f"{'judge':28s} {'accuracy':>8s} {'precision':>9s} {'recall':>7s} {'F1':>6s} {'pairwise':>8s} "
        f"{'benign FP':>9s} {'items/s':>8s}",
    ]
    for judge_id, m in results["judges"].items():
        pairwise = f"{m['pairwise_accuracy']:.3f}" if "pairwise_accuracy" in m else "-"
        lines.append(
            f"{judge_id:28s} {m['accuracy']:8.3f} {m['precision']:9.3f} {m['recall']:7.3f} {m['f1']:6.3f} "
            f"{pairwise:>8s} {m['benign_false_positive_rate']:9.3f} {m['items_per_s']:8.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="evaluate a seeded sample of this many responses")
    parser.add_argument("--benign-limit", type=int, default=None, help="likewise for the benign answers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="PKU pairs file/folder (default: $REALIGN_DATA_DIR)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--sets-only", action="store_true", help="only the every-judge-every-set table")
    args = parser.parse_args()
    sets = evaluate_sets(limit=args.limit, seed=args.seed)
    print(render_sets(sets))
    results: dict[str, Any] = {"sets": sets}
    if not args.sets_only:
        results["pku_pairs"] = evaluate(
            limit=args.limit, seed=args.seed, data=args.data, benign_limit=args.benign_limit
        )
        print(render(results["pku_pairs"]))
    if args.json:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
