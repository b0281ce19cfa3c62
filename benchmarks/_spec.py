"""Benchmark spec models: a YAML spec's sources, column mapping and the spec itself (validated when read)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from benchmarks._jailbreaks import jailbreak_template
from benchmarks._quirks import QUIRKS
from benchmarks._splits import SPLITS
from benchmarks.scoring import get_scorer
from harness.core.errors import ConfigError, name_unknown


class SourceSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str  # relative to the data dir; may contain {language} and glob characters
    language: str | None = None
    category: str | None = None  # fixed category for every row of this file
    url: str | None = None  # pinned upstream file, downloaded only when online
    sha256: str | None = None
    exclude: list[str] = Field(default_factory=list)  # file names skipped when `path` is a glob
    split: str | None = None  # a named row filter from benchmarks._splits.SPLITS (e.g. zoo_eval)
    where: dict[str, str] = Field(default_factory=dict)  # keep only rows whose columns equal these values

    @model_validator(mode="after")
    def _pinned_download(self) -> SourceSpec:
        """A downloadable source lands in the cache: its path must be relative, without '..', and
        the file pinned by sha256. (A local-only source may name any file the user can read.)"""
        if self.url is None:
            return self
        path = self.path
        parts = PurePosixPath(path.replace("\\", "/")).parts
        if path.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", path) or ".." in parts:
            raise ValueError(
                f"source with url: path {path!r} must be relative to the data dir, without '..' "
                "(downloads are confined to the cache directory)"
            )
        if not (self.sha256 and re.fullmatch(r"[0-9a-f]{64}", self.sha256)):
            raise ValueError(
                f"source {self.path!r}: a url needs a sha256 (64 lowercase hex digits) "
                f"to check the download against; got {self.sha256!r}"
            )
        return self

    @field_validator("split")
    @classmethod
    def _known_split(cls, split: str | None) -> str | None:
        if split is not None and split not in SPLITS:
            raise ValueError(f"unknown split {split!r} (known: {', '.join(sorted(SPLITS))})")
        return split


class FieldMap(BaseModel):
    """Which source column feeds each item field. An unmapped field takes the column of its own
    name when the file has one (the conventional columns), so a file with ``prompt``, ``category``,
    ``id``, ``language``, ``reference`` (and ``subcategory``, ``context``) needs no mapping."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str = "prompt"
    reference: str | None = None
    category: str | None = None
    subcategory: str | None = None
    id: str | None = None
    language: str | None = None
    context: str | None = None  # -> metadata["context"], read by judges that take context (HarmBench's)
    metadata: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _column_names(self) -> FieldMap:
        """A mapped column is a non-empty name; a metadata column is listed once."""
        for name in ("prompt", *CONVENTIONAL):
            column = getattr(self, name)
            if column is not None and not column.strip():
                raise ValueError(f"{name}: an empty column name; expected the name of a column in the data file")
        repeated = sorted({c for c in self.metadata if self.metadata.count(c) > 1})
        if repeated:
            raise ValueError(f"metadata: column(s) {repeated} listed twice; list each column once")
        return self

    def given(self) -> dict[str, Any]:
        """Only the fields set explicitly (an experiment's overrides of a benchmark's own mapping)."""
        return self.model_dump(include=self.model_fields_set)


def parse_field_overrides(benchmark: str, mapping: Mapping[str, Any]) -> FieldMap:
    """A benchmark's column-mapping overrides (``{prompt: Behavior, metadata: [source]}``) as a
    FieldMap whose :meth:`~FieldMap.given` is what was set; errors name the benchmark and the field."""
    known = list(FieldMap.model_fields)
    unknown = [k for k in mapping if k not in known]
    if unknown:
        raise ConfigError(
            f"benchmark {benchmark!r}: unknown option {name_unknown(unknown, known)}; "
            f"accepted options (item fields that take a column): {', '.join(known)}"
        )
    try:
        return FieldMap.model_validate({k: v for k, v in mapping.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        if not where:  # a check over the whole map: the message names the field
            raise ConfigError(f"benchmark {benchmark!r}: field map: {message}") from None
        raise ConfigError(
            f"benchmark {benchmark!r}: field {where}: {message} (got {err['input']!r}); expected a column name"
        ) from None


#: FieldMap fields that fall back to the column of their own name (not prompt: it always has a column).
CONVENTIONAL = ("reference", "category", "subcategory", "id", "language", "context")


class BenchmarkSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kind: Literal["safety", "utility"]
    description: str = ""
    languages: list[str] = Field(default_factory=list)
    layout: Literal["rows", "nested", "language_columns"] = "rows"
    header: bool = True  # CSV/XLSX: first row names the columns
    fields: FieldMap = Field(default_factory=FieldMap)
    sources: list[SourceSpec] = Field(default_factory=list)
    strip_key_suffix: str | None = None  # nested layout: stripped from category/subcategory keys
    category_from_filename: str | None = None  # regex with a (?P<category>...) group on the file stem
    category_aliases: dict[str, str] = Field(default_factory=dict)
    quirk: str | None = None  # name of a Python row transform in QUIRKS
    # str.format over the row (after the quirk) and the mapped fields ({prompt}, {context}, ...). A
    # list is joined by template_separator, leaving out each part whose fields are all empty.
    prompt_template: str | list[str] | None = None
    template_separator: str = "\n\n"
    conventional_columns: bool = True  # unmapped fields take a column of their own name (see FieldMap)
    system_prompt: str | None = None
    default_scorer: str = "harmfulness"  # a name in benchmarks.scoring.SCORERS, checked here
    # Jailbreak variant: each item once per template (benchmarks/jailbreaks/<name>.txt); the template
    # name becomes the item's subcategory (so `categories: [aim]` picks one) and metadata["jailbreak"].
    jailbreaks: list[str] = Field(default_factory=list)

    @field_validator("default_scorer")
    @classmethod
    def _known_scorer(cls, name: str) -> str:
        get_scorer(name)  # an unknown name fails when the spec is read, not at scoring time
        return name

    @field_validator("quirk")
    @classmethod
    def _known_quirk(cls, name: str | None) -> str | None:
        if name is not None and name not in QUIRKS:
            raise ValueError(
                f"unknown quirk {name_unknown([name], list(QUIRKS), cutoff=0.5)}; known: {', '.join(sorted(QUIRKS))}"
            )
        return name

    @field_validator("jailbreaks")
    @classmethod
    def _known_jailbreaks(cls, names: list[str]) -> list[str]:
        for name in names:
            jailbreak_template(name)  # unknown name or a malformed file: the error names it
        return names
