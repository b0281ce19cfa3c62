"""`realign zoo measure`: harmfulness, over-refusal and held-out task NLL of each zoo artifact.

Cheap by design (this runs on a CPU): HF greedy generation in batches, a fixed seeded sample of
CatQA (en + zh, the same questions in both languages; CatQA is never trained on), held-out benign
alpaca prompts for over-refusal, and per-token NLL of held-out task answers for utility. Results go
into each artifact's manifest (``measurements``) and, for the original model, the zoo manifest.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks import is_eval_holdout
from benchmarks.judges import get_judge
from harness.core.errors import DataError
from harness.core.hashing import hash_text, hash_value
from harness.core.records import GenerationRecord, Item, append_jsonl, iter_jsonl_tolerant
from harness.core.stats import wilson_interval

from ._build import _base_identity, _materialize, resolve_base
from ._data import _alpaca, _gsm8k, resolve_data_file
from ._manifest import MANIFEST, RECIPE_FILE, read_json, stage_dirs, write_json_atomic, write_top_manifest
from ._recipe import load_recipe
from ._train import chat_prompt, pad_batch, sft_loss, tokenize_example

ORIGINAL = "original"


@dataclass(frozen=True)
class MeasureConfig:
    catqa_per_language: int = 40
    benign: int = 30
    task_nll: int = 24
    max_new_tokens: int = 64
    batch_size: int = 16
    nll_max_length: int = 256
    seed: int = 0


def wilson(k: int, n: int) -> tuple[float, float]:
    """The zoo's 95% CI, with the z = 1.96 its shipped manifests were measured with."""
    return wilson_interval(k, n, z=1.96)


def catqa_items(language: str, count: int, seed: int) -> list[Item]:
    """A seeded sample of CatQA questions; the same positions for every language (parallel files)."""
    file = {"en": "catqa/catqa_english.json", "zh": "catqa/catqa_chinese.json"}[language]
    path = resolve_data_file(file, what=f"CatQA {language}")
    tree = json.loads(path.read_text(encoding="utf-8"))
    flat: list[tuple[str, str, str]] = []
    for category, subcategories in tree.items():
        for subcategory, questions in subcategories.items():
            flat += [(category, subcategory.rstrip(":"), q) for q in questions]
    if len(flat) < count:
        raise DataError(f"{path}: {len(flat)} questions, fewer than the {count} requested")
    picked = sorted(random.Random(seed).sample(range(len(flat)), count))
    return [
        Item(
            id=f"catqa-{language}-{i}",
            benchmark=f"catqa_{language}",
            prompt=flat[i][2],
            language=language,
            category=flat[i][0],
            subcategory=flat[i][1],
        )
        for i in picked
    ]


def benign_items(count: int) -> list[Item]:
    path = resolve_data_file("alpaca_gpt4_demo/alpaca_en_demo.json", what="benign prompts")
    held = [e for e in _alpaca(path, {}) if is_eval_holdout(e.prompt)][:count]
    return [
        Item(
            id=f"alpaca-en-heldout-{i}",
            benchmark="alpaca_en_heldout",
            prompt=e.prompt,
            language="en",
            reference=e.response,
        )
        for i, e in enumerate(held)
    ]


def task_sets(count: int) -> dict[str, list[tuple[str, str]]]:
    """Held-out (prompt, answer) pairs per task: never trained on by any zoo stage."""

    def held(file: str) -> list[tuple[str, str]]:
        path = resolve_data_file(file, what="task NLL set")
        return [(e.prompt, e.response) for e in _alpaca(path, {}) if is_eval_holdout(e.prompt)][:count]

    gsm = resolve_data_file("gsm8k/test.jsonl", what="task NLL set")
    return {
        "math": [(e.prompt, e.response) for e in _gsm8k(gsm, {})][:count],
        "code": held("code_alpaca/code_alpaca_2k.json"),
        "chinese": held("alpaca_gpt4_demo/alpaca_zh_demo.json"),
        "english": held("alpaca_gpt4_demo/alpaca_en_demo.json"),
    }


@torch.no_grad()
def generate(
    model: Any, tokenizer: Any, items: list[Item], config: MeasureConfig, cache: Path, model_hash: str
) -> list[GenerationRecord]:
    """Greedy completions, cached per item in ``cache`` (JSONL) so a re-run only fills the gaps."""
    gen_hash = hash_value({"max_new_tokens": config.max_new_tokens, "greedy": True})
    done = {
        r.item_id: r
        for r in iter_jsonl_tolerant(cache, GenerationRecord)
        if r.model_hash == model_hash and r.gen_config_hash == gen_hash
    }
    todo = [i for i in items if i.id not in done]
    tokenizer.padding_side = "left"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for start in range(0, len(todo), config.batch_size):
        chunk = todo[start : start + config.batch_size]
        texts = [chat_prompt(tokenizer, item.prompt) for item in chunk]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        output = model.generate(**enc, max_new_tokens=config.max_new_tokens, do_sample=False, pad_token_id=pad_id)
        new = output[:, enc["input_ids"].shape[1] :]
        records = []
        for item, text, row in zip(chunk, texts, new, strict=True):
            n_tokens = int((row != pad_id).sum())
            records.append(
                GenerationRecord(
                    item_id=item.id,
                    benchmark=item.benchmark,
                    prompt_text=text,
                    prompt_hash=hash_text(text),
                    completion=tokenizer.decode(row, skip_special_tokens=True).strip(),
                    model_hash=model_hash,
                    gen_config_hash=gen_hash,
                    backend="hf",
                    num_tokens=n_tokens,
                    finish_reason="stop" if n_tokens < config.max_new_tokens else "length",
                    language=item.language,
                    category=item.category,
                )
            )
        append_jsonl(cache, records)
        done.update({r.item_id: r for r in records})
    return [done[i.id] for i in items]


@torch.no_grad()
def task_nll(model: Any, tokenizer: Any, pairs: list[tuple[str, str]], config: MeasureConfig) -> dict[str, float]:
    """Mean per-token NLL of the answers (assistant turn only, chat template applied)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    total, count = 0.0, 0
    for start in range(0, len(pairs), 8):
        rows = [tokenize_example(tokenizer, p, a, config.nll_max_length) for p, a in pairs[start : start + 8]]
        loss, n = sft_loss(model, pad_batch(rows, pad_id))
        total, count = total + float(loss), count + n
    return {"nll": round(total / max(count, 1), 4), "tokens": count, "n": len(pairs)}


def _rate(k: int, n: int) -> dict[str, Any]:
    low, high = wilson(k, n)
    return {"k": k, "n": n, "rate": round(k / n, 4) if n else None, "ci95": [round(low, 4), round(high, 4)]}


def measure_model(
    model: Any, tokenizer: Any, model_hash: str, cache_dir: Path, config: MeasureConfig, judges: dict[str, Any]
) -> dict[str, Any]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result: dict[str, Any] = {"harmfulness": {}, "over_refusal": {}, "task_nll": {}, "samples": {}}
    for language in ("en", "zh"):
        items = catqa_items(language, config.catqa_per_language, config.seed)
        gens = generate(model, tokenizer, items, config, cache_dir / f"catqa_{language}.jsonl", model_hash)
        by_id = {i.id: i for i in items}
        entry = {}
        for name, judge in judges.items():
            if name == "refusal_rate":
                continue
            verdicts = judge.judge(gens, by_id)
            entry[name] = _rate(sum(v.label == "harmful" for v in verdicts), len(verdicts))
        result["harmfulness"][f"catqa_{language}"] = entry
        result["samples"][f"catqa_{language}"] = [[g.item_id, g.completion[:160]] for g in gens[:3]]
    benign = benign_items(config.benign)
    gens = generate(model, tokenizer, benign, config, cache_dir / "benign.jsonl", model_hash)
    verdicts = judges["refusal_rate"].judge(gens, {i.id: i for i in benign})
    result["over_refusal"]["alpaca_en_heldout"] = _rate(sum(v.label == "refusal" for v in verdicts), len(verdicts))
    result["samples"]["alpaca_en_heldout"] = [[g.item_id, g.completion[:160]] for g in gens[:3]]
    for task, pairs in task_sets(config.task_nll).items():
        result["task_nll"][task] = task_nll(model, tokenizer, pairs, config)
    result["judges"] = {name: {"id": j.id, "hash": j.hash} for name, j in judges.items()}
    result["config"] = asdict(config)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def make_judges() -> dict[str, Any]:
    return {
        "refusal": get_judge("refusal"),
        "offline": get_judge("offline"),
        "refusal_rate": get_judge("refusal", labels="refusal"),
    }


def measure(
    out: str | Path,
    *,
    base: str | Path | None = None,
    stages: tuple[str, ...] | None = None,
    include_original: bool = True,
    config: MeasureConfig | None = None,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Measure the original model and each built stage of the zoo in ``out``; update the manifests."""
    from transformers import AutoTokenizer

    root = Path(out).absolute()
    recipe_text = (root / RECIPE_FILE).read_text(encoding="utf-8")
    recipe = load_recipe(root / RECIPE_FILE)
    config = config or MeasureConfig(**recipe.measure)
    base_dir = resolve_base(str(base) if base is not None else recipe.base)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    judges = make_judges()
    cache_root = root / ".work" / "measure"
    results: dict[str, dict[str, Any]] = {}
    built = {read_json(d / MANIFEST)["stage"]: d for d in stage_dirs(root)}
    names = [s.name for s in recipe.stages if s.name in built and (stages is None or s.name in stages)]
    top = read_json(root / MANIFEST)
    if include_original:
        model_hash = _base_identity(base_dir)
        model = _materialize(recipe, None, base_dir, root).eval()
        if progress:
            print(f"zoo measure: {ORIGINAL} ({base_dir})", flush=True)
        results[ORIGINAL] = measure_model(model, tokenizer, model_hash, cache_root / ORIGINAL, config, judges)
        results[ORIGINAL]["model_hash"] = model_hash
        top.setdefault("measurements", {})[ORIGINAL] = results[ORIGINAL]
        write_json_atomic(root / MANIFEST, top)
        del model
    for name in names:
        directory = built[name]
        manifest = read_json(directory / MANIFEST)
        if progress:
            print(f"zoo measure: {name} ({directory})", flush=True)
        model = _materialize(recipe, name, base_dir, root).eval()
        model_hash = str(manifest["stage_hash"])
        results[name] = measure_model(model, tokenizer, model_hash, cache_root / name, config, judges)
        manifest["measurements"] = results[name]
        write_json_atomic(directory / MANIFEST, manifest)
        del model
    write_top_manifest(root, recipe, recipe_text)
    if include_original:  # write_top_manifest keeps earlier measurements; make sure ours is there
        top = read_json(root / MANIFEST)
        top.setdefault("measurements", {})[ORIGINAL] = results[ORIGINAL]
        write_json_atomic(root / MANIFEST, top)
    return results


def summary_table(out: str | Path) -> str:
    """A Markdown table of the measurements recorded in a zoo's manifests."""
    root = Path(out)
    top = read_json(root / MANIFEST)
    rows: list[tuple[str, dict[str, Any]]] = []
    if ORIGINAL in top.get("measurements", {}):
        rows.append((ORIGINAL, top["measurements"][ORIGINAL]))
    for directory in stage_dirs(root):
        manifest = read_json(directory / MANIFEST)
        if manifest.get("measurements"):
            rows.append((manifest["stage"], manifest["measurements"]))

    def cell(entry: dict[str, Any] | None) -> str:
        if not entry:
            return "-"
        low, high = entry["ci95"]
        return f"{entry['k']}/{entry['n']} = {entry['rate']:.2f} [{low:.2f}, {high:.2f}]"

    tasks = ["math", "code", "chinese", "english"]
    header = (
        "| model | CatQA-en harmful (refusal judge) | CatQA-en harmful (offline) | CatQA-zh harmful (refusal judge) "
        "| CatQA-zh harmful (offline) | benign over-refusal | " + " | ".join(f"NLL {t}" for t in tasks) + " |"
    )
    lines = [header, "|" + "---|" * (6 + len(tasks))]
    for name, m in rows:
        h = m.get("harmfulness", {})
        nll = m.get("task_nll", {})
        lines.append(
            f"| {name} | {cell(h.get('catqa_en', {}).get('refusal'))} | {cell(h.get('catqa_en', {}).get('offline'))} "
            f"| {cell(h.get('catqa_zh', {}).get('refusal'))} | {cell(h.get('catqa_zh', {}).get('offline'))} "
            f"| {cell(m.get('over_refusal', {}).get('alpaca_en_heldout'))} | "
            + " | ".join(f"{nll[t]['nll']:.3f}" if t in nll else "-" for t in tasks)
            + " |"
        )
    return "\n".join(lines)
