"""SOMF mask-training step vs a plain LoRA-DPO step on the same model and batch (side by side, one run).

Targets (issue 5): mask step time ≤ 1.5× the LoRA-DPO step; mask memory (logits, fp32) ≤ 1× the
LoRA trainable parameters in fp32. Each variant runs in its own subprocess so peak RSS is its own.

    .venv/bin/python perf/somf_bench.py                 # bundled SmolLM2-135M-Instruct, 4 pairs x 128 tokens
    .venv/bin/python perf/somf_bench.py --steps 2 --pairs 2 --settings lora
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
_SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if "REALIGN_DATA_DIR" not in os.environ and _SHARED_DATA.is_dir():
    os.environ["REALIGN_DATA_DIR"] = str(_SHARED_DATA)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _model_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    from harness.core.checkpoints import import_gguf
    from harness.core.paths import default_model_dir

    target = default_model_dir()
    return target if (target / "config.json").is_file() else import_gguf(target)


def _adapter(model_dir: Path, out: Path) -> tuple[Path, Path]:
    """An initial (aligned) and a perturbed (fine-tuned) r=8 q/v LoRA adapter on the model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
        LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]),
    )
    model.save_pretrained(str(out / "init"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)
    model.save_pretrained(str(out / "tuned"))
    return out / "init", out / "tuned"


def _batch(model_dir: Path, pairs: int, max_length: int) -> tuple[Any, list[Any]]:
    from transformers import AutoTokenizer

    from realign_methods.somf import load_preference_data
    from realign_methods.somf._data import tokenize_pairs

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data = load_preference_data(None, val_fraction=0.0, seed=0, max_pairs=pairs * 4)
    chosen = data.train[:pairs]
    return tokenizer, tokenize_pairs(tokenizer, chosen, max_length=max_length, max_prompt_length=max_length // 2)


def run_mask(args: argparse.Namespace) -> dict[str, Any]:
    from realign_methods.somf import load_task_vectors, make_config
    from realign_methods.somf._data import collate
    from realign_methods.somf._train import SomfModel, dpo_terms

    model_dir = Path(args.model)
    init, tuned = Path(args.work) / "init", Path(args.work) / "tuned"
    if args.setting == "lora":
        vectors = load_task_vectors("lora", base=model_dir, adapters=[tuned], aligned_adapter=init)
    else:
        vectors = load_task_vectors("merged", aligned=model_dir, adapters=[tuned])
    config = make_config(
        fusion="task_arithmetic",
        batch_size=args.pairs,
        micro_batch_size=args.pairs,
        max_length=args.max_length,
        max_prompt_length=args.max_length // 2,
    )
    tokenizer, tokenized = _batch(model_dir, args.pairs, args.max_length)
    batch = collate(tokenized, tokenizer.pad_token_id or 0)
    somf = SomfModel.load(vectors, config)
    names = sorted(somf.logits)
    optimizer = torch.optim.AdamW([somf.logits[n] for n in names], lr=1e-3)
    rss_loaded = _rss_mib()
    times = []
    for step in range(args.steps + 1):
        start = time.perf_counter()
        with torch.no_grad():  # reference recomputed every step, as the LoRA-DPO baseline does
            reference = somf.sequence_logps(somf.fused_weights("aligned"), batch)
        weights = somf.fused_weights("concrete", mask_seed=step, fusion_seed=step)
        loss, _ = dpo_terms(somf.sequence_logps(weights, batch), reference, config.beta)
        loss.mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:  # step 0 is warm-up
            times.append(time.perf_counter() - start)
    logits = sum(v.numel() for v in somf.logits.values())
    return {
        "variant": f"somf-mask ({args.setting})",
        "step_s": statistics.median(times),
        "peak_rss_mib": _rss_mib(),
        "rss_after_load_mib": rss_loaded,
        "trainable": logits,
        "trainable_mib_fp32": logits * 4 / 2**20,
    }


def run_lora(args: argparse.Namespace) -> dict[str, Any]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from realign_methods.somf._data import collate
    from realign_methods.somf._train import dpo_terms

    model_dir = Path(args.model)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, Path(args.work) / "tuned", is_trainable=True)
    model.eval()
    tokenizer, tokenized = _batch(model_dir, args.pairs, args.max_length)
    batch = collate(tokenized, tokenizer.pad_token_id or 0)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    rss_loaded = _rss_mib()

    def logps() -> torch.Tensor:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        logits, labels = out.logits[:, :-1], batch["labels"][:, 1:]
        token = -torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="none"
        ).view(labels.shape)
        return (token * (labels != -100)).sum(-1)

    times = []
    for step in range(args.steps + 1):
        start = time.perf_counter()
        with torch.no_grad(), model.disable_adapter():
            reference = logps()
        loss, _ = dpo_terms(logps(), reference, 0.1)
        loss.mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:
            times.append(time.perf_counter() - start)
    count = sum(p.numel() for p in trainable)
    return {
        "variant": "lora-dpo",
        "step_s": statistics.median(times),
        "peak_rss_mib": _rss_mib(),
        "rss_after_load_mib": rss_loaded,
        "trainable": count,
        "trainable_mib_fp32": count * 4 / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory (default: the bundled SmolLM2-135M-Instruct)")
    parser.add_argument("--pairs", type=int, default=4, help="preference pairs per step (2x sequences)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (after 1 warm-up)")
    parser.add_argument("--settings", default="lora,merged", help="SOMF settings to time (lora, merged)")
    parser.add_argument("--baseline-last", action="store_true", help="run the LoRA-DPO baseline after the mask runs")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--setting", default="lora", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.variant:
        result = run_mask(args) if args.variant == "mask" else run_lora(args)
        print("RESULT " + json.dumps(result))
        return
    model_dir = _model_dir(args.model)
    with tempfile.TemporaryDirectory(prefix="somf-bench-") as work:
        _adapter(model_dir, Path(work))
        results = []
        masks = [("mask", s) for s in args.settings.split(",") if s]
        runs = [*masks, ("lora", "lora")] if args.baseline_last else [("lora", "lora"), *masks]
        for variant, setting in runs:
            cmd = [
                sys.executable,
                __file__,
                "--variant",
                variant,
                "--setting",
                setting,
                "--work",
                work,
                "--model",
                str(model_dir),
                "--pairs",
                str(args.pairs),
                "--max-length",
                str(args.max_length),
                "--steps",
                str(args.steps),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{variant} failed:\n{proc.stderr[-3000:]}")
            results.append(json.loads(line[len("RESULT ") :]))
    baseline = next(r for r in results if r["variant"] == "lora-dpo")
    print(
        f"model {model_dir.name}, {args.pairs} pairs x <= {args.max_length} tokens, median of {args.steps} steps, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"{'variant':<22}{'step s':>9}{'x LoRA':>8}{'peak RSS MiB':>14}{'step RSS MiB':>14}{'trainable':>12}{'fp32 MiB':>10}{'x LoRA':>8}"
    )
    for r in results:
        print(
            f"{r['variant']:<22}{r['step_s']:>9.2f}{r['step_s'] / baseline['step_s']:>8.2f}{r['peak_rss_mib']:>14.0f}"
            f"{r['peak_rss_mib'] - r['rss_after_load_mib']:>14.0f}{r['trainable']:>12,}{r['trainable_mib_fp32']:>10.2f}"
            f"{r['trainable'] / baseline['trainable']:>8.2f}"
        )
    lora_mask = next((r for r in results if r["variant"] == "somf-mask (lora)"), None)
    if lora_mask is not None:
        time_ok = lora_mask["step_s"] <= 1.5 * baseline["step_s"]
        memory_ok = lora_mask["trainable"] <= baseline["trainable"]
        print(
            f"targets (lora setting): step time <= 1.5x LoRA-DPO: {'met' if time_ok else 'NOT met'} "
            f"({lora_mask['step_s'] / baseline['step_s']:.2f}x); mask memory <= 1x LoRA trainable fp32: "
            f"{'met' if memory_ok else 'NOT met'} ({lora_mask['trainable'] / baseline['trainable']:.2f}x)"
        )


if __name__ == "__main__":
    main()
