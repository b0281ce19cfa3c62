"""The zoo recipe: a frozen, validated description of every model-organism artifact to build."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.core.errors import ConfigError
from harness.core.hashing import hash_value
from harness.core.yaml_strict import load_yaml

_ALL_LLAMA_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LoraSpec(_Frozen):
    """LoRA hyper-parameters. A stage that continues its parent's adapter inherits these."""

    r: int = Field(8, ge=1, le=1024)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: tuple[str, ...] = _ALL_LLAMA_LINEAR

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("target_modules must name at least one module")
        return value


class DatasetSpec(_Frozen):
    """One training source mixed into a stage.

    ``source`` names a loader (see ``harness.zoo.SOURCES``); ``path`` is relative to the data
    directory ($REALIGN_DATA_DIR) unless absolute; ``fraction`` is this source's share of the
    stage's training examples (the shares of a stage must sum to 1).
    """

    source: str
    path: str | None = None
    fraction: float = Field(gt=0, le=1)
    options: dict[str, str | int | float | bool | list[str]] = Field(default_factory=dict)


class StageSpec(_Frozen):
    """One artifact: SFT or DPO, LoRA (fresh or continuing the parent's adapter) or full weights."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    parent: str | None = None  # None = the base model
    kind: Literal["sft", "dpo"] = "sft"
    method: Literal["lora", "full"] = "lora"
    lora: LoraSpec | None = None  # required for a fresh LoRA; inherited when continuing
    continue_from_parent: bool = True  # LoRA on a LoRA parent: keep training the parent's adapter
    datasets: tuple[DatasetSpec, ...]
    steps: int = Field(ge=1)
    lr: float = Field(gt=0)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(256, ge=16)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    dpo_beta: float = Field(0.1, gt=0)
    seed: int = 0
    checkpoint_every: int = Field(10, ge=1)
    ship: bool = True  # part of the shipped organism (the size budget applies)
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> StageSpec:
        total = sum(d.fraction for d in self.datasets)
        if not self.datasets:
            raise ValueError(f"stage {self.name!r}: datasets must not be empty")
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"stage {self.name!r}: dataset fractions sum to {total:g}, expected 1")
        if self.method == "full" and self.lora is not None:
            raise ValueError(f"stage {self.name!r}: method 'full' takes no 'lora' block")
        return self


class Recipe(_Frozen):
    """A zoo recipe: a base model and a DAG of stages (aligned <- base, unaligned <- aligned, ...)."""

    name: str
    description: str = ""
    base: str = "bundled:SmolLM2-135M-Instruct"  # or a path to a Hugging Face model directory
    stages: tuple[StageSpec, ...]
    size_budget_mb: float = Field(20.0, gt=0)  # total size of the shipped (ship: true) artifacts
    measure: dict[str, int] = Field(default_factory=dict)  # overrides of MeasureConfig sizes

    @model_validator(mode="after")
    def _check_graph(self) -> Recipe:
        names = [s.name for s in self.stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate stage names: {dupes}")
        seen: set[str] = set()
        by_name = {s.name: s for s in self.stages}
        for stage in self.stages:  # parents must come first: keeps the order a valid build order
            if stage.parent is not None and stage.parent not in seen:
                where = "is defined later" if stage.parent in by_name else "does not exist"
                raise ValueError(
                    f"stage {stage.name!r}: parent {stage.parent!r} {where} "
                    f"(stages: {names}; list parents before their children)"
                )
            parent = by_name.get(stage.parent) if stage.parent else None
            fresh_lora = stage.method == "lora" and not (
                parent is not None and parent.method == "lora" and stage.continue_from_parent
            )
            if fresh_lora and stage.lora is None:
                raise ValueError(f"stage {stage.name!r}: a fresh LoRA stage needs a 'lora' block")
            seen.add(stage.name)
        return self

    @property
    def hash(self) -> str:
        return hash_value(self.model_dump(mode="json"))

    def stage(self, name: str) -> StageSpec:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise ConfigError(f"recipe {self.name!r} has no stage {name!r} (stages: {[s.name for s in self.stages]})")

    def lineage(self, name: str) -> list[StageSpec]:
        """The stage and its ancestors, base-most first."""
        chain: list[StageSpec] = []
        current: str | None = name
        while current is not None:
            stage = self.stage(current)
            chain.append(stage)
            current = stage.parent
        return chain[::-1]

    def effective_lora(self, name: str) -> LoraSpec | None:
        """The LoRA spec a stage trains with (a continued adapter keeps its ancestor's shape)."""
        stage = self.stage(name)
        if stage.method != "lora":
            return None
        while self._continues(stage):
            stage = self.stage(stage.parent)  # type: ignore[arg-type]
        return stage.lora

    def _continues(self, stage: StageSpec) -> bool:
        if stage.parent is None or stage.method != "lora" or not stage.continue_from_parent:
            return False
        return self.stage(stage.parent).method == "lora"


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe YAML file; every problem names the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe file not found: {path}")
    raw = load_yaml(path.read_text(), str(path))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: invalid recipe: {problems}") from exc
