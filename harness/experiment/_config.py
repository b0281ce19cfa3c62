"""The experiment file: one YAML describing methods × fine-tuned models × benchmarks.

Everything is validated before any expensive work starts: unknown keys, wrong types, unknown
methods/benchmarks/judges, method parameters out of range, missing model paths, and clashing
output names are all refused with the field named.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from benchmarks import FieldMap, parse_field_overrides
from benchmarks.judges import JudgeOptions, get_judge_class
from harness.core.errors import ConfigError
from harness.core.yaml_strict import load_yaml
from harness.generate._config import GenerationConfig


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelRef(_Frozen):
    """A model: a dense directory, or a base directory plus a PEFT LoRA adapter."""

    path: str = Field(description="model directory, or the name 'smollm2-135m-instruct' for the bundled model")
    adapter: str | None = Field(default=None, description="PEFT LoRA adapter directory applied on `path`")

    @property
    def label(self) -> str:
        return f"{self.path}+{self.adapter}" if self.adapter else self.path


class FinetunedModel(ModelRef):
    name: str = Field(description="short label used in the leaderboard, e.g. 'math-lora'")
    task: str | None = Field(default=None, description="downstream task label, e.g. 'math'")


class Models(_Frozen):
    original: ModelRef | None = Field(default=None, description="the model before safety alignment (reported as a row)")
    base: ModelRef | None = None
    aligned: ModelRef | None = None
    unaligned: ModelRef | None = None
    finetuned: list[FinetunedModel] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Models:
        names = [m.name for m in self.finetuned]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"models.finetuned: duplicate name(s) {dupes}")
        return self


class MethodEntry(_Frozen):
    name: str
    label: str | None = Field(default=None, description="leaderboard name; defaults to name(param=value, ...)")
    params: dict[str, Any] = Field(default_factory=dict, description="fixed parameters")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="parameters to sweep (cartesian product)")

    @model_validator(mode="after")
    def _disjoint(self) -> MethodEntry:
        both = sorted(set(self.params) & set(self.grid))
        if both:
            raise ValueError(f"method {self.name!r}: parameter(s) {both} given in both params and grid")
        empty = sorted(k for k, v in self.grid.items() if not v)
        if empty:
            raise ValueError(f"method {self.name!r}: grid parameter(s) {empty} have no values")
        return self

    def variants(self) -> list[tuple[str, dict[str, Any]]]:
        """(label, params) for each point of the grid."""
        keys = sorted(self.grid)
        out = []
        for values in itertools.product(*(self.grid[k] for k in keys)):
            point = dict(zip(keys, values, strict=True))
            params = {**self.params, **point}
            if self.label and not point:
                label = self.label
            else:
                shown = ", ".join(f"{k}={point[k]}" for k in keys)
                stem = self.label or self.name
                label = f"{stem}({shown})" if shown else stem
            out.append((label, params))
        return out


class BenchmarkEntry(_Frozen):
    name: str = Field(description="a registered benchmark, or a YAML spec file (relative to the experiment file)")
    label: str | None = None
    limit: int | None = Field(default=None, ge=1)
    sample: int | None = Field(default=None, ge=1, description="seeded random subset of this size")
    seed: int = 0
    languages: list[str] | None = None
    categories: list[str] | None = None
    data_path: str | None = Field(default=None, description="data file or folder (relative to the experiment file)")
    system_prompt: str | None = None
    options: FieldMap = Field(
        default_factory=FieldMap, description="column mapping, e.g. {prompt: Behavior, context: ContextString}"
    )
    judge: str | None = Field(
        default=None,
        description="primary judge of this benchmark (one of `judges`; "
        "default: the first); it must declare the benchmark's languages",
    )
    # not part of a cell's generation identity: it only tells the leaderboard what the numbers are for
    task: str | None = Field(
        default=None,
        description="the fine-tune task this utility benchmark measures (e.g. "
        "math): utility retained of a fine-tune with that `task:` is read from it",
    )

    @field_validator("options", mode="before")
    @classmethod
    def _column_mapping(cls, value: Any, info: ValidationInfo) -> Any:
        """Checked against the benchmark's column mapping here, so the error names the benchmark."""
        if isinstance(value, FieldMap):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping of item field -> column name, got {type(value).__name__}")
        return parse_field_overrides(str(info.data.get("name", "?")), value)

    @field_serializer("options")
    def _given_options(self, options: FieldMap) -> dict[str, Any]:
        return options.given()  # what the experiment set: a cell's identity as before this was typed

    @property
    def key(self) -> str:
        """The leaderboard name: the label, else the name (a spec file's stem for a spec path)."""
        if self.label:
            return self.label
        return Path(self.name).stem if self.name.endswith((".yaml", ".yml")) else self.name


class GenerationSettings(_Frozen):
    """The experiment's `generation:`: a backend and its options, and the decoding settings, whose ranges
    are GenerationConfig's (one model: checked by building it, so the two can never disagree)."""

    backend: Literal["hf", "vllm", "dummy"] = "hf"
    # experiment defaults (short answers); allowed values: GenerationConfig's
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    batch_size: int = 16
    num_samples: int = 1
    stop: list[str] = Field(default_factory=list)
    backend_options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _decodable(self) -> GenerationSettings:
        try:
            self.decoding(seed=0)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            raise ValueError(f"{where + ': ' if where else ''}{error['msg'].removeprefix('Value error, ')}") from None
        return self

    def decoding(self, seed: int) -> GenerationConfig:
        """The GenerationConfig the backend receives (the experiment's seed seeds sampling)."""
        return GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=seed,
            stop=tuple(self.stop),
            num_samples=self.num_samples,
            batch_size=self.batch_size,
        )


class PairwiseSettings(_Frozen):
    """SOMF-style pairwise judging: each cell's answers against the reference's answers to the same items."""

    reference: str = Field(
        description="the method (label or name; `original`, `aligned`, `sft` too) whose answers "
        "the others are judged against, per fine-tuned model"
    )
    benchmarks: list[str] | None = Field(
        default=None,
        description="benchmark labels judged pairwise; default: those whose scorer is pairwise (somf_eval)",
    )


class Experiment(_Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    output_dir: str = Field(default="runs", description="artifacts (checkpoints, generations, judgments)")
    store: str | None = Field(
        default=None, description="SQLite path or SQLAlchemy URL; default <output_dir>/results.sqlite"
    )
    models: Models
    methods: list[MethodEntry] = Field(min_length=1)
    benchmarks: list[BenchmarkEntry] = Field(min_length=1)
    judges: list[str] = Field(default_factory=lambda: ["offline-multilingual"])
    #: each judge's options, validated against that judge's declared options model when parsed
    judge_options: dict[str, JudgeOptions] = Field(default_factory=dict)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    pairwise: PairwiseSettings | None = Field(
        default=None,
        description="judge safety answers pairwise (win/loss/draw) "
        "against a reference method's, with each benchmark's primary judge",
    )
    allow_code_execution: bool = False
    allow_pickle: bool = Field(
        default=False, description="load pickle checkpoints (weights_only=True); refused by default"
    )
    allow_nonfinite: bool = Field(default=False, description="merge inputs/outputs holding NaN/inf instead of refusing")
    # How model-written code is isolated; not part of the identity (it does not change honest scores).
    sandbox: Literal["namespace", "audit"] = Field(
        default="namespace",
        exclude=True,
        description="namespace (refuses when unshare is missing) or audit (explicit, weaker, warns)",
    )
    executor: Literal["local", "ray"] = "local"

    # Resolved relative to the experiment file by `load_experiment`; not part of the identity.
    base_dir: str = Field(default=".", exclude=True)

    @field_validator("judge_options", mode="before")
    @classmethod
    def _parse_judge_options(cls, value: Any) -> Any:
        """Each judge's options as its own options model (errors name the judge, the option and what is allowed)."""
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping of judge name -> options, got {type(value).__name__}")
        parsed: dict[str, JudgeOptions] = {}
        for name, options in value.items():
            if isinstance(options, JudgeOptions):
                parsed[name] = options
            elif isinstance(options, dict):
                parsed[name] = get_judge_class(name).parse_options(options)
            else:
                raise ValueError(f"judge {name!r}: options are a mapping (option: value), got {type(options).__name__}")
        return parsed

    @field_serializer("judge_options")
    def _given_judge_options(self, judge_options: dict[str, JudgeOptions]) -> dict[str, dict[str, Any]]:
        # the options as given (a subclass's fields kept; defaults left out, as the dict had them)
        return {name: options.model_dump(mode="json", exclude_unset=True) for name, options in judge_options.items()}

    @field_validator("judges")
    @classmethod
    def _judges_unique(cls, judges: list[str]) -> list[str]:
        if len(set(judges)) != len(judges):
            raise ValueError("judges: duplicate judge names")
        return judges

    @model_validator(mode="after")
    def _benchmark_judges_listed(self) -> Experiment:
        for index, bench in enumerate(self.benchmarks):
            if bench.judge is not None and bench.judge not in self.judges:
                raise ValueError(
                    f"benchmarks[{index}] ({bench.key}): judge {bench.judge!r} is not in `judges` "
                    f"({', '.join(self.judges) or 'none'}); add it there"
                )
        return self

    def primary_judge(self, bench: BenchmarkEntry) -> str | None:
        """The judge whose verdicts score ``bench`` (its own ``judge``, else the first of ``judges``)."""
        return bench.judge or (self.judges[0] if self.judges else None)

    @model_validator(mode="after")
    def _no_clashing_labels(self) -> Experiment:
        labels = [label for m in self.methods for label, _ in m.variants()]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"methods: two entries produce the same output name {dupes}; give one a distinct `label`")
        keys = [b.key for b in self.benchmarks]
        dupes = sorted({x for x in keys if keys.count(x) > 1})
        if dupes:
            raise ValueError(f"benchmarks: two entries share the name {dupes}; give one a distinct `label`")
        return self

    def resolve(self, path: str) -> Path:
        """A path from the file, relative to the experiment file's folder."""
        p = Path(path).expanduser()
        # normpath: "configs/../runs" is shown and logged as "runs" (no symlinks are resolved)
        return Path(os.path.normpath(p if p.is_absolute() else Path(self.base_dir) / p))

    @property
    def output_path(self) -> Path:
        return self.resolve(self.output_dir)

    @property
    def store_location(self) -> str:
        if self.store and "://" in self.store:
            return self.store
        return str(self.resolve(self.store) if self.store else self.output_path / "results.sqlite")


def _format_validation_error(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = str(err["msg"]).removeprefix("Value error, ")  # a validator's own message, without pydantic's prefix
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(
            f"  {where}: {msg}"
            + (
                f" (got {err['input']!r})"
                if err["type"] != "extra_forbidden" and not isinstance(err.get("input"), dict)
                else ""
            )
        )
    return f"{source}: invalid experiment:\n" + "\n".join(lines)


def parse_experiment(data: dict[str, Any], *, source: str = "<experiment>", base_dir: str | Path = ".") -> Experiment:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return Experiment.model_validate({**data, "base_dir": str(base_dir)})
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc)) from None


def load_experiment(path: str | Path) -> Experiment:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: experiment file not found")
    data = load_yaml(path.read_text(encoding="utf-8"), str(path))  # a key given twice is an error
    return parse_experiment(data, source=str(path), base_dir=path.parent.resolve())
