"""Throughput of the generation backends on the same prompts, side by side, plus greedy agreement.

    .venv/bin/python perf/generate_bench.py --model smollm2-135m-instruct --items 20 --max-new-tokens 256

Prints, per backend: load/start-up seconds, generation seconds, generated tokens, tokens/s; then how
many greedy completions are identical across backends and where the first one diverges.
Prompts: the first N CatQA-en items with the model's chat template.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def first_divergence(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model dir or smollm2-135m-instruct")
    parser.add_argument("--benchmark", default="catqa")
    parser.add_argument("--lang", default="en")
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--backends", default="hf,vllm")
    parser.add_argument("--hf-threads", type=int, default=None, help="torch threads for hf (default: torch's)")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from transformers import AutoTokenizer

    from benchmarks import get_benchmark  # type: ignore[attr-defined,unused-ignore]
    from harness.core.checkpoints import resolve_model
    from harness.generate import GenerationConfig, build_prompt, get_backend

    model = Path(resolve_model(args.model))
    items = get_benchmark(args.benchmark).load(limit=args.items, languages=[args.lang])
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    prompts = [build_prompt(item, tokenizer) for item in items]
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    print(
        f"model {model}, {len(prompts)} {args.benchmark}-{args.lang} prompts, greedy, max_new_tokens {config.max_new_tokens}"
    )

    texts: dict[str, list[str]] = {}
    for name in args.backends.split(","):
        start = time.perf_counter()
        options = {"num_threads": args.hf_threads} if name == "hf" and args.hf_threads else {}
        backend = get_backend(name, model, **options)
        loaded = time.perf_counter() - start
        start = time.perf_counter()
        outputs = backend.generate(prompts, config)
        seconds = time.perf_counter() - start
        backend.close()
        tokens = sum(c[0].num_tokens for c in outputs)
        texts[name] = [c[0].text for c in outputs]
        print(
            f"{name:6s} load {loaded:7.1f} s  generate {seconds:7.1f} s  {tokens:6d} tokens  {tokens / seconds:6.1f} tok/s"
        )

    names = list(texts)
    for other in names[1:]:
        pairs = list(zip(texts[names[0]], texts[other], strict=True))
        same = sum(a == b for a, b in pairs)
        print(f"{names[0]} vs {other}: {same}/{len(pairs)} identical greedy completions")
        for index, (a, b) in enumerate(pairs):
            if a != b:
                pos = first_divergence(a, b)
                print(
                    f"  item {index}: diverges at char {pos} of {len(a)}/{len(b)}: {a[pos : pos + 40]!r} vs {b[pos : pos + 40]!r}"
                )


if __name__ == "__main__":
    main()
