"""The training loop of one zoo stage: SFT or DPO, LoRA or full weights, seeded and resumable.

A plain loop (not ``transformers.Trainer``) so that a checkpoint holds exactly what resuming needs:
the trainable tensors, the optimizer and scheduler states, the RNG state and the loss log. Batches
are padded to their longest row only (dynamic padding); the loss covers the assistant turn only.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from harness.core.checkpoints._atomic import atomic_write_bytes
from harness.core.errors import CheckpointError, ConfigError

from ._data import Example
from ._recipe import StageSpec

CHECKPOINT_FILE = "state.pt"
LOG_FILE = "train_log.jsonl"


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]  # -100 outside the assistant turn


@dataclass
class TrainResult:
    loss_curve: list[tuple[int, float]]
    seconds: float
    resumed_from: int = 0
    tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def chat_prompt(tokenizer: Any, prompt: str) -> str:
    """The model's own chat template up to the assistant turn (its default system prompt included)."""
    return str(
        tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    )


def tokenize_example(tokenizer: Any, prompt: str, response: str, max_length: int) -> Tokenized:
    """Chat-template the turn; labels only on the assistant part (its end-of-turn token included)."""
    head = chat_prompt(tokenizer, prompt)
    full = str(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}], tokenize=False
        )
    )
    if not full.startswith(head):  # a template that rewrites earlier turns: fall back to concatenation
        full = head + response + (tokenizer.eos_token or "")
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    tail_ids = tokenizer(full[len(head) :], add_special_tokens=False)["input_ids"]
    keep_tail = min(len(tail_ids), max(max_length // 2, max_length - len(head_ids)))
    tail_ids = tail_ids[:keep_tail]
    head_ids = head_ids[-(max_length - len(tail_ids)) :] if len(head_ids) + len(tail_ids) > max_length else head_ids
    return Tokenized(head_ids + tail_ids, [-100] * len(head_ids) + tail_ids)


def pad_batch(rows: Sequence[Tokenized], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest row of this batch only."""
    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row.input_ids)
        ids[i, :n] = torch.tensor(row.input_ids)
        labels[i, :n] = torch.tensor(row.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def token_logprobs(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row sum of log p(label token) over labelled positions, and the labelled token count."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    valid = targets != -100
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * valid).sum(-1), valid.sum(-1)


def sft_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed token cross-entropy over the assistant tokens, and their count."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return loss, int((targets != -100).sum())


def _lr_lambda(spec: StageSpec):
    def factor(step: int) -> float:
        if spec.warmup_steps and step < spec.warmup_steps:
            return (step + 1) / spec.warmup_steps
        progress = (step - spec.warmup_steps) / max(1, spec.steps - spec.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))  # cosine to 10%

    return factor


def _atomic_torch_save(obj: Any, path: Path) -> None:
    """The resumable training state (a tiny model's LoRA and optimizer: fits in memory), written atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def train(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    spec: StageSpec,
    work_dir: Path,
    *,
    steps: int,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` in place for ``steps`` optimizer steps on ``examples`` (len = steps*batch*accum).

    Every ``spec.checkpoint_every`` steps the state goes to ``work_dir/state.pt`` (atomically); a
    later call with the same ``work_dir`` continues from there, reproducing the uninterrupted run.
    """
    from tqdm.auto import tqdm

    per_step = spec.batch_size * spec.grad_accum
    if len(examples) != steps * per_step:
        raise ConfigError(f"stage {spec.name!r}: {len(examples)} examples for {steps} steps of {per_step}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    work_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(spec.model_copy(update={"steps": steps})))

    def encode(prompt: str, response: str) -> Tokenized:
        return tokenize_example(tokenizer, prompt, response, spec.max_length)

    ref: torch.Tensor | None = None
    state_path = work_dir / CHECKPOINT_FILE
    start, curve = 0, []
    if state_path.is_file():
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(
                f"{state_path}: unreadable training checkpoint ({exc}); delete it to restart"
            ) from exc
        missing = set(named) - set(state["trainable"])
        if missing:
            raise CheckpointError(f"{state_path}: checkpoint lacks trainable tensors, e.g. {sorted(missing)[:3]}")
        with torch.no_grad():
            for name, param in named.items():
                param.copy_(state["trainable"][name])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start, curve = int(state["step"]), [(int(s), float(v)) for s, v in state["curve"]]
        ref = state.get("ref")
    if spec.kind == "dpo" and ref is None:
        ref = _reference_logprobs(model, examples, encode, spec, pad_id)

    started = time.perf_counter()
    tokens = 0
    bar = tqdm(total=steps, initial=start, desc=f"zoo {spec.name}", disable=not progress, unit="step")
    model.train()
    with open(work_dir / LOG_FILE, "a", encoding="utf-8") as log:
        for step in range(start, steps):
            chunk = examples[step * per_step : (step + 1) * per_step]
            optimizer.zero_grad(set_to_none=True)
            if spec.kind == "sft":
                rows = [encode(e.prompt, e.response) for e in chunk]
                count = sum(sum(1 for t in r.labels[1:] if t != -100) for r in rows)
                total = 0.0
                for i in range(0, per_step, spec.batch_size):
                    batch = pad_batch(rows[i : i + spec.batch_size], pad_id)
                    tokens += int(batch["attention_mask"].sum())
                    loss, _ = sft_loss(model, batch)
                    (loss / max(count, 1)).backward()
                    total += float(loss.detach())
                step_loss = total / max(count, 1)
            else:
                assert ref is not None
                step_loss = 0.0
                for i in range(0, per_step, spec.batch_size):
                    part = chunk[i : i + spec.batch_size]
                    index = step * per_step + i
                    loss = _dpo_loss(model, part, ref[index : index + len(part)], encode, spec, pad_id)
                    (loss * len(part) / per_step).backward()
                    step_loss += float(loss.detach()) * len(part) / per_step
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            curve.append((step + 1, round(step_loss, 5)))
            log.write(
                json.dumps(
                    {
                        "step": step + 1,
                        "loss": round(step_loss, 5),
                        "lr": scheduler.get_last_lr()[0],
                        "time": round(time.time(), 2),
                    }
                )
                + "\n"
            )
            log.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}")
            if (step + 1) % spec.checkpoint_every == 0 and step + 1 < steps:
                _atomic_torch_save(
                    {
                        "step": step + 1,
                        "trainable": {n: p.detach().clone() for n, p in named.items()},
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "rng": torch.get_rng_state(),
                        "curve": curve,
                        "ref": ref,
                    },
                    state_path,
                )
    bar.close()
    model.eval()
    return TrainResult(curve, time.perf_counter() - started, start, tokens)


def _encode_pairs(part, encode, pad_id) -> dict[str, torch.Tensor]:
    rows = [encode(e.prompt, e.response) for e in part] + [encode(e.prompt, e.rejected or "") for e in part]
    return pad_batch(rows, pad_id)


@torch.no_grad()
def _reference_logprobs(model, examples, encode, spec: StageSpec, pad_id: int) -> torch.Tensor:
    """log p_ref(chosen) - log p_ref(rejected) per example, from the model before training."""
    model.eval()
    margins = []
    for i in range(0, len(examples), spec.batch_size):
        part = examples[i : i + spec.batch_size]
        logps, _ = token_logprobs(model, _encode_pairs(part, encode, pad_id))
        margins.append(logps[: len(part)] - logps[len(part) :])
    return torch.cat(margins)


def _dpo_loss(model, part, ref_margin: torch.Tensor, encode, spec: StageSpec, pad_id: int) -> torch.Tensor:
    logps, _ = token_logprobs(model, _encode_pairs(part, encode, pad_id))
    margin = logps[: len(part)] - logps[len(part) :]
    return -F.logsigmoid(spec.dpo_beta * (margin - ref_margin)).mean()
