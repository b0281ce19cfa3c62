"""Training SOMF's mask logits with DPO on one loaded model (``torch.func.functional_call``, no copies).

Only the logits require grad. Every forward draws a binary-Concrete mask, masks each task vector,
fuses them with the chosen rule (``realign_methods.ops``) and swaps the realigned weights into the
frozen model for that call. The reference policy is the fused model with the untrained mask (its
expected value σ(0) = ½, which with the rescaling is the unmasked fusion) or, as an option, the
aligned model; its log-probs are computed once per pair and kept.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from safetensors.torch import load_file, save_file

from harness.core.errors import CheckpointError, ConfigError
from harness.core.hashing import hash_value
from realign_methods.somf._data import (
    IGNORE_INDEX,
    PreferenceData,
    TokenizedPair,
    collate,
    load_preference_data,
    tokenize_pairs,
)
from realign_methods.somf._fusion import check_fusion, fusion_params, masked_fused_weights
from realign_methods.somf._mask import (
    Granularity,
    check_mask_shapes,
    init_logits,
    mask_density,
    mask_parameter_count,
)
from realign_methods.somf._vectors import TaskVectors

log = logging.getLogger(__name__)

MASK_FILE = "mask.safetensors"
CONFIG_FILE = "somf.json"
METRICS_FILE = "metrics.json"
STATE_DIR = "state"


# SOMF's fusion rules by name (``FUSIONS`` is their definition; a test keeps the two in step).
FusionName = Literal["task_arithmetic", "ties", "ties_mean", "weight_average", "dare"]


class SomfTrainingFields(BaseModel):
    """The mask-training knobs that both the training config and the registered ``somf`` method take:
    declared once here, so defaults, ranges and descriptions cannot drift between the two."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fusion: FusionName = Field(default="task_arithmetic", description="fusion rule of the masked task vectors")
    granularity: Granularity = Field(
        default="element", description="one logit per parameter (4 B each) | per output row | per tensor"
    )
    temperature: float = Field(default=0.5, gt=0.0, description="binary-Concrete temperature")
    normalize: bool = Field(default=True, description="masked delta = δ⊙m/mean(m) (paper) instead of δ⊙m")
    beta: float = Field(default=0.1, gt=0.0, description="DPO β")
    reference: Literal["fused_init", "aligned"] = Field(default="fused_init", description="DPO reference policy")
    lr: float = Field(default=1e-3, gt=0.0, description="AdamW learning rate of the logits")
    steps: int = Field(default=500, ge=1, description="optimizer steps")
    batch_size: int = Field(default=16, ge=1, description="pairs per optimizer step")
    micro_batch_size: int = Field(default=4, ge=1, description="pairs per forward (gradient accumulation)")
    max_length: int = Field(default=512, ge=8, description="tokens per prompt + response")
    max_prompt_length: int = Field(default=256, ge=4, description="tokens of the prompt (longer ones are cut)")
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0, description="share of prompts held out")
    max_pairs: int | None = Field(
        default=None, ge=2, description="seeded subset of the preference pairs (whole prompts)"
    )

    @field_validator("fusion", mode="before")
    @classmethod
    def _known_fusion(cls, value: Any) -> Any:
        # Before the Literal check, so a misspelt rule gets the near-name hint.
        return check_fusion(value) if isinstance(value, str) else value


class SomfTrainConfig(SomfTrainingFields):
    """Every knob of mask training; its canonical JSON (with the inputs' hashes) is the cache key."""

    fusion_params: dict[str, float] = Field(default_factory=dict, description="override λ / density / p of the rule")
    weight_decay: float = Field(default=0.0, ge=0.0)
    eval_every: int = Field(default=0, ge=0, description="validation every N steps (0: only at the end)")
    eval_train_pairs: int = Field(default=32, ge=1, description="training pairs whose soft-mask loss is tracked")
    checkpoint_every: int = Field(default=50, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> SomfTrainConfig:
        fusion_params(self.fusion, self.fusion_params)  # unknown keys / ranges
        if self.micro_batch_size > self.batch_size:
            raise ValueError(f"micro_batch_size ({self.micro_batch_size}) exceeds batch_size ({self.batch_size})")
        if self.max_prompt_length >= self.max_length:
            raise ValueError(
                f"max_prompt_length ({self.max_prompt_length}) must be below max_length ({self.max_length})"
            )
        if self.granularity == "tensor" and self.normalize:
            raise ValueError(
                "granularity 'tensor' with normalize=True cannot mask anything (δ·m/mean(m) = δ); set normalize=False"
            )
        return self

    @property
    def training_identity(self) -> dict[str, Any]:
        """The fields that change the trained mask (not eval/checkpoint cadence)."""
        return self.model_dump(exclude={"eval_every", "checkpoint_every", "eval_train_pairs"})


@dataclass
class SomfModel:
    """The frozen model plus the mask logits and the task vectors they gate."""

    model: Any
    vectors: TaskVectors
    config: SomfTrainConfig
    logits: dict[str, torch.Tensor]

    @classmethod
    def load(
        cls, vectors: TaskVectors, config: SomfTrainConfig, logits: dict[str, torch.Tensor] | None = None
    ) -> SomfModel:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(vectors.model_dir, dtype=torch.float32)
        model.requires_grad_(False)
        model.eval()  # no dropout: the mask sample is the only noise
        if logits is None:
            logits = init_logits(vectors.shapes, config.granularity)
        check_mask_shapes(logits, vectors.shapes, config.granularity)
        params = dict(model.named_parameters())
        missing = [n for n in vectors.weight_names() if n not in params]
        if missing:
            raise CheckpointError(
                f"{vectors.model_dir}: model has no parameter(s) {missing[:5]} that the task vectors change"
            )
        return cls(model, vectors, config, logits)

    def fused_weights(
        self,
        mode: Literal["concrete", "soft", "sample", "threshold", "unmasked", "aligned"],
        *,
        mask_seed: int = 0,
        fusion_seed: int = 0,
        logits: dict[str, torch.Tensor] | None = None,
        threshold: float = 0.5,
    ) -> dict[str, torch.Tensor]:
        """Realigned weights of every changed parameter, differentiable w.r.t. the logits."""
        params = dict(self.model.named_parameters())
        return masked_fused_weights(
            self.vectors,
            self.logits if logits is None else logits,
            base=params.__getitem__,
            fusion=self.config.fusion,
            overrides=self.config.fusion_params,
            mode=mode,
            temperature=self.config.temperature,
            normalize=self.config.normalize,
            threshold=threshold,
            mask_seed=mask_seed,
            fusion_seed=fusion_seed,
        )

    def sequence_logps(self, weights: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Summed response log-prob of each row of ``batch`` under the model with ``weights`` swapped in."""
        from torch.func import functional_call

        output = functional_call(
            self.model,
            weights,
            args=(),
            kwargs={"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]},
            strict=False,
        )
        logits = output.logits[:, :-1, :]
        labels = batch["labels"][:, 1:]
        token_logps = -F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
        ).view(labels.shape)
        return (token_logps * (labels != IGNORE_INDEX)).sum(-1)


def dpo_terms(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair DPO loss and reward margin; rows are [chosen..., rejected...]."""
    n = policy.shape[0] // 2
    margin = (policy[:n] - policy[n:]) - (reference[:n] - reference[n:])
    return -F.logsigmoid(beta * margin), beta * margin


def _step_seed(seed: int, *parts: int) -> int:
    return int(hash_value([seed, *parts], 15), 16)


def _step_generator(seed: int, *parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(_step_seed(seed, *parts))


class _Trainer:
    def __init__(self, somf: SomfModel, data: PreferenceData, tokenizer: Any) -> None:
        self.somf = somf
        self.config = somf.config
        self.tokenizer = tokenizer
        kw = {"max_length": self.config.max_length, "max_prompt_length": self.config.max_prompt_length}
        self.train = tokenize_pairs(tokenizer, data.train, **kw)
        self.validation = tokenize_pairs(tokenizer, data.validation, **kw)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad if pad is not None else 0)
        self._reference: dict[tuple[str, int], torch.Tensor] = {}
        self._reference_weights: dict[str, torch.Tensor] | None = None

    def batch_indices(self, step: int) -> list[int]:
        """Pairs of optimizer step ``step``: a seeded permutation per epoch, so resuming is exact."""
        n, size = len(self.train), self.config.batch_size
        indices = []
        for position in range(step * size, (step + 1) * size):
            epoch, offset = divmod(position, n)
            perm = torch.randperm(n, generator=_step_generator(self.config.seed, 7, epoch))
            indices.append(int(perm[offset]))
        return indices

    def reference_logps(self, split: str, pairs: Sequence[TokenizedPair], indices: Sequence[int]) -> torch.Tensor:
        missing = [i for i in indices if (split, i) not in self._reference]
        if missing:
            with torch.no_grad():
                if self._reference_weights is None:
                    mode: Literal["aligned", "soft"] = "aligned" if self.config.reference == "aligned" else "soft"
                    fresh = init_logits(self.somf.vectors.shapes, self.config.granularity)
                    self._reference_weights = self.somf.fused_weights(mode, logits=fresh, fusion_seed=self.config.seed)
                for start in range(0, len(missing), self.config.micro_batch_size):
                    chunk = missing[start : start + self.config.micro_batch_size]
                    logps = self.somf.sequence_logps(
                        self._reference_weights, collate([pairs[i] for i in chunk], self.pad_id)
                    )
                    for j, index in enumerate(chunk):
                        self._reference[(split, index)] = torch.stack([logps[j], logps[len(chunk) + j]])
        rows = [self._reference[(split, i)] for i in indices]
        return torch.cat([torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])])

    def train_step(self, step: int) -> dict[str, float]:
        indices = self.batch_indices(step)
        total_loss, total_margin, correct = 0.0, 0.0, 0
        size = self.config.micro_batch_size
        for micro, start in enumerate(range(0, len(indices), size)):
            chunk = indices[start : start + size]
            reference = self.reference_logps("train", self.train, chunk)
            weights = self.somf.fused_weights(
                "concrete",
                mask_seed=_step_seed(self.config.seed, 1, step, micro),
                fusion_seed=_step_seed(self.config.seed, 2, step, micro),
            )
            policy = self.somf.sequence_logps(weights, collate([self.train[i] for i in chunk], self.pad_id))
            losses, margins = dpo_terms(policy, reference, self.config.beta)
            (losses.sum() / len(indices)).backward()
            total_loss += float(losses.detach().sum())
            total_margin += float(margins.detach().sum())
            correct += int((margins.detach() > 0).sum())
        n = len(indices)
        return {"loss": total_loss / n, "reward_margin": total_margin / n, "reward_accuracy": correct / n}

    @torch.no_grad()
    def evaluate(self, split: str, pairs: Sequence[TokenizedPair], indices: Sequence[int]) -> dict[str, float]:
        """Soft-mask (expected) DPO loss, preference accuracy (policy log p(chosen) > log p(rejected)),
        and reward accuracy (DPO implicit reward margin > 0)."""
        if not indices:
            return {}
        weights = self.somf.fused_weights("soft", fusion_seed=self.config.seed)
        losses, margins, logp_margins = [], [], []
        for start in range(0, len(indices), self.config.micro_batch_size):
            chunk = list(indices[start : start + self.config.micro_batch_size])
            reference = self.reference_logps(split, pairs, chunk)
            policy = self.somf.sequence_logps(weights, collate([pairs[i] for i in chunk], self.pad_id))
            loss, margin = dpo_terms(policy, reference, self.config.beta)
            losses.append(loss)
            margins.append(margin)
            logp_margins.append(policy[: len(chunk)] - policy[len(chunk) :])
        loss_t, margin_t, logp_t = torch.cat(losses), torch.cat(margins), torch.cat(logp_margins)
        return {
            "pairs": len(indices),
            "loss": float(loss_t.mean()),
            "preference_accuracy": float((logp_t > 0).float().mean()),
            "reward_accuracy": float((margin_t > 0).float().mean()),
            "reward_margin": float(margin_t.mean()),
            "mask_density": mask_density(self.somf.logits, self.somf.vectors.shapes),
        }

    def evaluate_all(self, step: int) -> dict[str, Any]:
        n_train = min(self.config.eval_train_pairs, len(self.train))
        return {
            "step": step,
            "train": self.evaluate("train", self.train, list(range(n_train))),
            "validation": self.evaluate("validation", self.validation, list(range(len(self.validation)))),
        }


# ---- resumable state (safetensors + JSON; no pickle) ----


def _save_state(
    work: Path,
    logits: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    names: list[str],
    record: dict[str, Any],
) -> None:
    tmp = work / (STATE_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous() for k, v in logits.items()}, tmp / MASK_FILE)
    moments: dict[str, torch.Tensor] = {}
    adam_steps: dict[str, float] = {}
    for name, param in zip(names, optimizer.param_groups[0]["params"], strict=True):
        state = optimizer.state.get(param)
        if state:
            moments[f"exp_avg/{name}"] = state["exp_avg"].contiguous()
            moments[f"exp_avg_sq/{name}"] = state["exp_avg_sq"].contiguous()
            adam_steps[name] = float(state["step"])
    save_file(moments, tmp / "optimizer.safetensors")
    (tmp / "state.json").write_text(json.dumps({**record, "adam_steps": adam_steps}))
    final = work / STATE_DIR
    old = work / (STATE_DIR + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _load_state(
    work: Path, logits: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, names: list[str]
) -> dict[str, Any] | None:
    state_dir = work / STATE_DIR
    if not (state_dir / "state.json").is_file():
        return None
    record = json.loads((state_dir / "state.json").read_text())
    saved = load_file(state_dir / MASK_FILE)
    check_mask_shapes(saved, {k: v.shape for k, v in logits.items()}, "element", source=str(state_dir / MASK_FILE))
    with torch.no_grad():
        for name, value in saved.items():
            logits[name].copy_(value)
    moments = load_file(state_dir / "optimizer.safetensors")
    for name, param in zip(names, optimizer.param_groups[0]["params"], strict=True):
        if name in record["adam_steps"]:
            optimizer.state[param] = {
                "step": torch.tensor(record["adam_steps"][name]),
                "exp_avg": moments[f"exp_avg/{name}"].clone(),
                "exp_avg_sq": moments[f"exp_avg_sq/{name}"].clone(),
            }
    return dict(record)


def make_config(**fields: Any) -> SomfTrainConfig:
    """SomfTrainConfig from keyword fields, with a ConfigError (not a pydantic trace) naming each bad field."""
    try:
        return SomfTrainConfig(**fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'config'}: {error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        raise ConfigError(f"somf training config: {problems}") from None


def train_cache_key(vectors: TaskVectors, data_sha256: str, config: SomfTrainConfig) -> str:
    return hash_value(
        {"somf": 1, "inputs": vectors.content_hash, "data": data_sha256, "config": config.training_identity}, 32
    )


def _load_tokenizer(vectors: TaskVectors) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(vectors.model_dir)
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"{vectors.model_dir}: no usable tokenizer to format the preference pairs ({exc})"
        ) from exc


def train_mask(
    vectors: TaskVectors,
    config: SomfTrainConfig,
    out: str | Path,
    *,
    preference_file: str | Path | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> Path:
    """Train the mask and write ``out`` (mask, config, metrics); resumes from ``out``.partial.

    Everything is validated (data rows, shapes, fusion rule) before the first step. An ``out`` that
    already holds a finished run is returned as is.
    """
    out = Path(out)
    if (out / CONFIG_FILE).is_file():
        return out
    data = load_preference_data(
        preference_file, val_fraction=config.val_fraction, seed=config.seed, max_pairs=config.max_pairs
    )
    tokenizer = _load_tokenizer(vectors)
    somf = SomfModel.load(vectors, config)
    trainer = _Trainer(somf, data, tokenizer)
    names = sorted(somf.logits)
    optimizer = torch.optim.AdamW([somf.logits[n] for n in names], lr=config.lr, weight_decay=config.weight_decay)
    work = out.with_name(out.name + ".partial")
    work.mkdir(parents=True, exist_ok=True)
    identity = {"key": train_cache_key(vectors, data.sha256, config)}
    record = _load_state(work, somf.logits, optimizer, names)
    if record is not None and record.get("identity") != identity:
        raise CheckpointError(
            f"{work}: holds a partial SOMF run with different inputs or settings; delete it or choose another output"
        )
    if record is None:
        record = {"identity": identity, "step": 0, "loss_curve": [], "evaluations": [], "seconds": 0.0}
        record["evaluations"].append(trainer.evaluate_all(0))
    started = time.perf_counter()
    for step in range(int(record["step"]), config.steps):
        optimizer.zero_grad(set_to_none=True)
        metrics = trainer.train_step(step)
        optimizer.step()
        metrics["mask_density"] = mask_density(somf.logits, vectors.shapes)
        record["loss_curve"].append({"step": step + 1, **metrics})
        record["step"] = step + 1
        if progress is not None:
            progress(step + 1, metrics)
        if not math.isfinite(metrics["loss"]):
            raise CheckpointError(f"SOMF training diverged at step {step + 1} (loss {metrics['loss']}); lower lr")
        if config.eval_every and (step + 1) % config.eval_every == 0 and step + 1 < config.steps:
            record["evaluations"].append(trainer.evaluate_all(step + 1))
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            record["seconds"] = float(record["seconds"]) + time.perf_counter() - started
            started = time.perf_counter()
            _save_state(work, somf.logits, optimizer, names, record)
    if not record["evaluations"] or record["evaluations"][-1]["step"] != config.steps:
        record["evaluations"].append(trainer.evaluate_all(config.steps))
    _write_artifacts(work, out, somf, data, record)
    return out


def _write_artifacts(work: Path, out: Path, somf: SomfModel, data: PreferenceData, record: dict[str, Any]) -> None:
    config, vectors = somf.config, somf.vectors
    final_dir = work / "final.tmp"
    shutil.rmtree(final_dir, ignore_errors=True)
    final_dir.mkdir()
    metadata = {
        "format": "pt",
        "realign_method": "somf",
        "setting": vectors.setting,
        "granularity": config.granularity,
        "temperature": str(config.temperature),
        "normalize": str(config.normalize),
        "fusion": config.fusion,
    }
    save_file({k: v.detach().contiguous() for k, v in somf.logits.items()}, final_dir / MASK_FILE, metadata=metadata)
    first, last = record["evaluations"][0], record["evaluations"][-1]
    summary = {
        "somf_version": 1,
        "cache_key": record["identity"]["key"],
        "setting": vectors.setting,
        "config": config.model_dump(),
        "resolved_fusion_params": fusion_params(config.fusion, config.fusion_params),
        "inputs": vectors.provenance,
        "inputs_content_hash": vectors.content_hash,
        "data": {
            "path": str(data.path),
            "sha256": data.sha256,
            "train_pairs": len(data.train),
            "validation_pairs": len(data.validation),
            "train_prompts": len({p.prompt for p in data.train}),
            "validation_prompts": len({p.prompt for p in data.validation}),
        },
        "mask": {
            "logits": mask_parameter_count(vectors.shapes, config.granularity),
            "task_vector_parameters": vectors.parameter_count,
            "density": mask_density(somf.logits, vectors.shapes),
        },
        "train_seconds": record["seconds"],
        "validation_preference_accuracy": last["validation"].get("preference_accuracy"),
        "validation_reward_accuracy": last["validation"].get("reward_accuracy"),
        "train_loss_initial": first["train"]["loss"],
        "train_loss_final": last["train"]["loss"],
    }
    (final_dir / METRICS_FILE).write_text(
        json.dumps({"loss_curve": record["loss_curve"], "evaluations": record["evaluations"]}, indent=1)
    )
    (final_dir / CONFIG_FILE).write_text(json.dumps(summary, indent=1, default=str))
    _plot_loss(record["loss_curve"], final_dir / "loss_curve.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        shutil.rmtree(out)
    os.replace(final_dir, out)
    shutil.rmtree(work, ignore_errors=True)


def _plot_loss(curve: list[dict[str, Any]], path: Path) -> None:
    if not curve:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([c["step"] for c in curve], [c["loss"] for c in curve])
    ax.set_xlabel("step")
    ax.set_ylabel("DPO loss (sampled mask)")
    ax.set_title("SOMF mask training")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def read_mask(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Logits and the run summary of a trained mask directory."""
    path = Path(path)
    mask_file = path / MASK_FILE if path.is_dir() else path
    summary_file = mask_file.parent / CONFIG_FILE
    if not mask_file.is_file():
        raise CheckpointError(
            f"{mask_file}: no trained SOMF mask here (expected {MASK_FILE} from `realign somf train`)"
        )
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    return load_file(mask_file), summary
