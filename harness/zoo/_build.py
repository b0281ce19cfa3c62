"""`realign zoo build`: plan and validate a recipe, then train each stage into an artifact + manifest."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.core.checkpoints import checkpoint_hash, resolve_model
from harness.core.checkpoints._atomic import make_temp_dir, move_into_place
from harness.core.errors import CheckpointError, ConfigError
from harness.core.hashing import hash_value, sha256_file

from ._data import Example, data_fingerprint, load_examples, mix_examples, source_of
from ._manifest import ARTIFACT_FORMAT, MANIFEST, write_json_atomic, write_top_manifest
from ._recipe import Recipe, StageSpec, load_recipe
from ._train import train

log = logging.getLogger(__name__)

WORK_DIR = ".work"
UNSHIPPED_DIR = "unshipped"
BYTES_PER_PARAM_FULL = 4 + 4 + 8  # fp32 weights + grads + two Adam moments


@dataclass
class StagePlan:
    spec: StageSpec
    steps: int
    data: list[tuple[Any, list[Example]]]
    fingerprints: list[dict[str, Any]]
    hash: str


def resolve_base(base: str) -> Path:
    return resolve_model(base)


def artifact_dir(out: Path, spec: StageSpec) -> Path:
    return out / spec.name if spec.ship else out / UNSHIPPED_DIR / spec.name


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (what a new allocation can get without swapping)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil  # not on Linux: fall back to psutil (a transformers/accelerate dependency)

    return int(psutil.virtual_memory().available)


def _meta_model(base_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(base_dir)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{base_dir}: no readable model config.json ({exc})") from exc
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return config, model


def linear_module_names(model: Any) -> list[str]:
    """Short names (last path component) of the Linear layers LoRA can target."""
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})


def estimate_memory(n_params: int, config: Any, spec: StageSpec, lora_params: int) -> int:
    """Rough peak bytes of a training step: weights (+grads+Adam for what trains) + activations."""
    hidden = int(getattr(config, "hidden_size", 0))
    layers = int(getattr(config, "num_hidden_layers", 0))
    vocab = int(getattr(config, "vocab_size", 0))
    trainable = n_params if spec.method == "full" else lora_params
    tokens = spec.batch_size * spec.max_length * (2 if spec.kind == "dpo" else 1)
    activations = tokens * (layers * hidden * 4 * 34 + vocab * 4 * 3)  # saved layer inputs + fp32 logits/grads
    return n_params * 4 + trainable * (BYTES_PER_PARAM_FULL - 4) + activations + (1 << 29)


def plan(
    recipe: Recipe, base_dir: Path, *, only: tuple[str, ...] = (), steps_scale: float = 1.0, out: Path | None = None
) -> list[StagePlan]:
    """Validate everything a build needs before any training starts; return the stages to build."""
    if steps_scale <= 0:
        raise ConfigError(f"--steps-scale must be > 0, got {steps_scale}")
    for name in only:
        recipe.stage(name)
    config, meta = _meta_model(base_dir)
    linears = linear_module_names(meta)
    n_params = sum(p.numel() for p in meta.parameters())
    selected = [s for s in recipe.stages if not only or s.name in only]
    plans: dict[str, StagePlan] = {}
    for spec in recipe.stages:
        lora = recipe.effective_lora(spec.name)
        if lora is not None:
            wrong = [m for m in lora.target_modules if m not in linears]
            if wrong:
                raise ConfigError(
                    f"stage {spec.name!r}: LoRA target module(s) {wrong} not in the model at {base_dir}; "
                    f"its linear modules are: {linears}"
                )
        groups, fingerprints = [], []
        for dataset in spec.datasets:
            source = source_of(dataset, stage=spec.name)
            if spec.kind == "dpo" and not source.pairs:
                raise ConfigError(f"stage {spec.name!r} is DPO but source {dataset.source!r} has no preference pairs")
            if spec.kind == "sft" and source.pairs:
                raise ConfigError(f"stage {spec.name!r} is SFT but source {dataset.source!r} yields DPO pairs")
            examples = load_examples(dataset, stage=spec.name) if spec in selected else []
            groups.append((dataset, examples))
            for file, digest in data_fingerprint(dataset, stage=spec.name).items():
                fingerprints.append(
                    {
                        "source": dataset.source,
                        "file": file,
                        "sha256": digest,
                        "fraction": dataset.fraction,
                        "available": len(examples) or None,
                    }
                )
        lora_params = _lora_param_count(meta, lora) if lora else 0
        need = estimate_memory(n_params, config, spec, lora_params)
        have = available_memory_bytes()
        if spec in selected and need > have:
            raise ConfigError(
                f"stage {spec.name!r}: {spec.method} fine-tuning needs about {need / 2**30:.1f} GiB "
                f"({n_params / 1e6:.0f}M params x {BYTES_PER_PARAM_FULL if spec.method == 'full' else 4} B "
                f"+ activations for batch {spec.batch_size} x {spec.max_length} tokens) but only "
                f"{have / 2**30:.1f} GiB is available; use LoRA, a smaller batch_size/max_length, or a bigger machine"
            )
        steps = max(1, round(spec.steps * steps_scale))
        plans[spec.name] = StagePlan(spec, steps, groups, fingerprints, "")
    # identities last: hashing the base reads its weights, pointless if a check above fails
    base_hash = _base_identity(base_dir)
    for spec in recipe.stages:
        stage_plan = plans[spec.name]
        lora = recipe.effective_lora(spec.name)
        parent_hash = plans[spec.parent].hash if spec.parent else base_hash
        identity = {
            "stage": spec.model_dump(mode="json"),
            "steps": stage_plan.steps,
            "parent": parent_hash,
            "lora": lora.model_dump(mode="json") if lora else None,
            "data": [(f["file"], f["sha256"]) for f in stage_plan.fingerprints],
        }
        stage_plan.hash = hash_value(identity)
    if out is not None:  # a stage whose parent is not built here must already exist on disk
        for spec in selected:
            if spec.parent and spec.parent not in {s.name for s in selected}:
                parent = recipe.stage(spec.parent)
                if _built_hash(artifact_dir(out, parent)) != plans[parent.name].hash:
                    raise ConfigError(
                        f"stage {spec.name!r} needs its parent {parent.name!r} built first with this recipe "
                        f"(not found up to date in {artifact_dir(out, parent)}); drop --only or add it"
                    )
    return [plans[s.name] for s in selected]


def _lora_param_count(meta: Any, lora: Any) -> int:
    total = 0
    for name, module in meta.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in lora.target_modules:
            total += lora.r * (module.in_features + module.out_features)
    return total


def _base_identity(base_dir: Path) -> str:
    return checkpoint_hash(base_dir)


def _built_hash(directory: Path) -> str | None:
    try:
        return str(json.loads((directory / MANIFEST).read_text())["stage_hash"])
    except (OSError, ValueError, KeyError):
        return None


# ---------------------------------------------------------------- model assembly


def _load_plain(path: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def _continues(recipe: Recipe, spec: StageSpec) -> bool:
    return recipe._continues(spec)


def _adapter_base(recipe: Recipe, spec: StageSpec, base_dir: Path, out: Path) -> Any:
    """The plain model a LoRA stage's adapter applies to (continued adapters share their root's)."""
    root = spec
    while _continues(recipe, root):
        root = recipe.stage(root.parent)  # type: ignore[arg-type]
    return _materialize(recipe, root.parent, base_dir, out)


def _materialize(recipe: Recipe, name: str | None, base_dir: Path, out: Path) -> Any:
    """The plain (merged) model of a built stage, or the base model for None."""
    if name is None:
        return _load_plain(base_dir)
    spec = recipe.stage(name)
    directory = artifact_dir(out, spec)
    if spec.method == "full":
        return _load_plain(directory)
    from peft import PeftModel

    model = _adapter_base(recipe, spec, base_dir, out)
    return PeftModel.from_pretrained(model, directory).merge_and_unload()


def _trainable_model(recipe: Recipe, spec: StageSpec, base_dir: Path, out: Path) -> Any:
    from peft import LoraConfig, PeftModel, get_peft_model

    if spec.method == "full":
        model = _materialize(recipe, spec.parent, base_dir, out)
        model.requires_grad_(True)
        return model
    if _continues(recipe, spec):
        model = _adapter_base(recipe, spec, base_dir, out)
        parent_dir = artifact_dir(out, recipe.stage(spec.parent))  # type: ignore[arg-type]
        return PeftModel.from_pretrained(model, parent_dir, is_trainable=True)
    lora = recipe.effective_lora(spec.name)
    assert lora is not None
    model = _materialize(recipe, spec.parent, base_dir, out)
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,  # type: ignore[arg-type]  # PEFT takes floats too
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


# ---------------------------------------------------------------- saving


def _save_artifact(model: Any, tokenizer: Any, spec: StageSpec, recipe: Recipe, tmp: Path) -> None:
    if spec.method == "full":
        # full weights keep fp32: bf16 rounding (2^-8 relative) would swamp small task vectors
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        return
    import warnings

    from safetensors.torch import load_file, save_file

    with warnings.catch_warnings():  # PEFT looks the base up by name to check the vocabulary; it is unchanged
        warnings.filterwarnings("ignore", message="Could not find a config file")
        model.save_pretrained(tmp)
    weights = tmp / "adapter_model.safetensors"
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(weights).items()}
    save_file(tensors, weights, metadata={"format": "pt", "stage": spec.name, "recipe": recipe.name})
    config_path = tmp / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = recipe.base  # a name, not this machine's path
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    readme = tmp / "README.md"  # PEFT's model card template, not ours
    if readme.exists():
        readme.unlink()


def _versions() -> dict[str, str]:
    import peft
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def build(
    recipe: Recipe | str | Path,
    out: str | Path,
    *,
    only: tuple[str, ...] = (),
    steps_scale: float = 1.0,
    base: str | Path | None = None,
    progress: bool = True,
    recipe_path: Path | None = None,
) -> dict[str, Path]:
    """Build the recipe's stages into ``out`` (skipping those already built identically).

    Returns {stage name: artifact directory}. Each artifact is written into a temporary directory
    and renamed into place, so an interrupted build leaves only its resumable ``.work`` checkpoint.
    """
    from transformers import AutoTokenizer

    if not isinstance(recipe, Recipe):
        recipe_path = Path(recipe)
        recipe = load_recipe(recipe_path)
    out = Path(out).absolute()
    base_dir = resolve_base(str(base) if base is not None else recipe.base)
    plans = plan(recipe, base_dir, only=only, steps_scale=steps_scale, out=out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ".gitignore").write_text(f"{WORK_DIR}/\n{UNSHIPPED_DIR}/\n")
    recipe_text = (
        recipe_path.read_text()
        if recipe_path
        else json.dumps(recipe.model_dump(mode="json"), indent=2, ensure_ascii=False)
    )
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    built: dict[str, Path] = {}
    for stage_plan in plans:
        spec = stage_plan.spec
        target = artifact_dir(out, spec)
        if _built_hash(target) == stage_plan.hash:
            log.info("stage %s is up to date in %s", spec.name, target)
            built[spec.name] = target
            continue
        per_step = spec.batch_size * spec.grad_accum
        examples = mix_examples(stage_plan.data, stage_plan.steps * per_step, spec.seed)
        work = out / WORK_DIR / f"{spec.name}-{stage_plan.hash}"
        if (work / "state.pt").exists():
            print(f"zoo: resuming stage {spec.name} from its checkpoint in {work}")
        torch.manual_seed(spec.seed)  # a fresh LoRA's random init must follow the recipe seed
        model = _trainable_model(recipe, spec, base_dir, out)
        result = train(model, tokenizer, examples, spec, work, steps=stage_plan.steps, progress=progress)
        tmp = make_temp_dir(target)
        tmp.chmod(0o755)  # mkdtemp makes it private; artifacts are meant to be shared
        try:
            _save_artifact(model, tokenizer, spec, recipe, tmp)
            shutil.copyfile(work / "train_log.jsonl", tmp / "train_log.jsonl")
            manifest = {
                "format": ARTIFACT_FORMAT,
                "recipe": {"name": recipe.name, "hash": recipe.hash},
                "stage": spec.name,
                "stage_hash": stage_plan.hash,
                "description": spec.description,
                "parent": spec.parent,
                "kind": spec.kind,
                "method": spec.method,
                "lora": (lora.model_dump(mode="json") if (lora := recipe.effective_lora(spec.name)) else None),
                "continues_parent_adapter": _continues(recipe, spec),
                "base": {
                    "name": recipe.base if base is None else str(base),
                    "checkpoint_hash": _base_identity(base_dir),
                },
                "data": stage_plan.fingerprints,
                "examples": len(examples),
                "seed": spec.seed,
                "steps": stage_plan.steps,
                "steps_scale": steps_scale,
                "resumed_from_step": result.resumed_from,
                "train_seconds": round(result.seconds, 1),
                "loss_curve": result.loss_curve,
                "versions": _versions(),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "measurements": {},
            }
            manifest["files"] = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            write_json_atomic(tmp / "manifest.json", manifest)
            move_into_place(tmp, target)  # an old artifact is replaced only once the new one is complete
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(work, ignore_errors=True)
        built[spec.name] = target
        del model
    write_top_manifest(out, recipe, recipe_text)
    return built
