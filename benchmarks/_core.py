"""Benchmark specs (YAML, shipped as package data), data-file resolution and loaders."""

from __future__ import annotations

import csv
import glob
import gzip
import hashlib
import io
import json
import os
import random
import re
import string
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from os.path import commonpath
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from benchmarks._jailbreaks import apply_jailbreak, jailbreak_template
from benchmarks._splits import SPLITS
from benchmarks.scoring import Reads, get_scorer
from harness.core.errors import ConfigError, DataError, name_unknown
from harness.core.paths import cache_dir, data_dirs
from harness.core.records import Item
from harness.core.registry import Registry
from harness.core.yaml_strict import load_yaml

Row = dict[str, Any]


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
            raise ValueError(f"source with url: path {path!r} must be relative to the data dir, without '..' "
                             "(downloads are confined to the cache directory)")
        if not (self.sha256 and re.fullmatch(r"[0-9a-f]{64}", self.sha256)):
            raise ValueError(f"source {self.path!r}: a url needs a sha256 (64 lowercase hex digits) "
                             f"to check the download against; got {self.sha256!r}")
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
        raise ConfigError(f"benchmark {benchmark!r}: unknown option {name_unknown(unknown, known)}; "
                          f"accepted options (item fields that take a column): {', '.join(known)}")
    try:
        return FieldMap.model_validate({k: v for k, v in mapping.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        if not where:  # a check over the whole map: the message names the field
            raise ConfigError(f"benchmark {benchmark!r}: field map: {message}") from None
        raise ConfigError(f"benchmark {benchmark!r}: field {where}: {message} "
                          f"(got {err['input']!r}); expected a column name") from None


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

    @field_validator("jailbreaks")
    @classmethod
    def _known_jailbreaks(cls, names: list[str]) -> list[str]:
        for name in names:
            jailbreak_template(name)  # unknown name or a malformed file: the error names it
        return names


# ---------------------------------------------------------------- quirks (Python only where needed)

QUIRKS: dict[str, Callable[[Row], Row]] = {}


def _quirk(name: str) -> Callable[[Callable[[Row], Row]], Callable[[Row], Row]]:
    def decorator(fn: Callable[[Row], Row]) -> Callable[[Row], Row]:
        QUIRKS[name] = fn
        return fn

    return decorator


@_quirk("multijail")
def _multijail(row: Row) -> Row:
    import ast

    tags = ast.literal_eval(row["tags"]) if isinstance(row.get("tags"), str) else row.get("tags")
    tags = list(tags or [])
    return {**row, "tags": tags, "_category": tags[0] if tags else None}


@_quirk("gsm8k")
def _gsm8k(row: Row) -> Row:
    answer = str(row["answer"])
    final = answer.split("####")[-1].strip().replace(",", "")
    return {**row, "_reference": final, "solution": answer}


@_quirk("task_answer")
def _task_answer(row: Row) -> Row:
    # GSM8K rows (question/answer) or Alpaca rows (instruction/input/output), prompt built as the zoo does.
    if "question" in row:
        return {**row, "prompt": str(row["question"]), "_reference": str(row["answer"])}
    instruction, extra = str(row["instruction"]), str(row.get("input") or "")
    return {**row, "prompt": f"{instruction}\n\n{extra}" if extra else instruction, "_reference": str(row["output"])}


@_quirk("humaneval")
def _humaneval(row: Row) -> Row:
    return {**row, "code_prompt": row["prompt"]}


@_quirk("xcopa_zh")
def _xcopa_zh(row: Row) -> Row:
    # lm-eval's xcopa_zh: premise without its final punctuation + connector; choices as given.
    connector = {"cause": "因为", "effect": "所以"}[row["question"]]
    context = str(row["premise"]).strip()[:-1] + f" {connector}"
    return {**row, "prompt": context, "_reference": str(row["label"]),
            "choices": [row["choice1"], row["choice2"]]}


@_quirk("hh_rlhf")
def _hh_rlhf(row: Row) -> Row:
    chosen, rejected = str(row["chosen"]), str(row["rejected"])
    # Prompt = the longest common prefix up to an "\n\nAssistant:" boundary (robust to replies
    # that embed "Human:" text); split it into turns; the last Human turn is the prompt.
    common = commonpath([chosen, rejected])
    cut = common.rfind("\n\nAssistant:")
    dialogue = chosen[:cut] if cut >= 0 else chosen[: chosen.rfind("\n\nAssistant:")]
    turns = re.split(r"\n\n(Human|Assistant): ", dialogue)
    messages: list[dict[str, str]] = []
    for role, text in zip(turns[1::2], turns[2::2], strict=False):
        messages.append({"role": "user" if role == "Human" else "assistant", "content": text.strip()})
    while messages and messages[-1]["role"] != "user":  # a shared opening of the final reply
        messages.pop()
    if not messages:
        raise ValueError("no Human turn")
    return {**row, "prompt": messages[-1]["content"], "history": messages[:-1],
            "_reference": chosen[len(dialogue):].removeprefix("\n\nAssistant:").strip()}


# ---------------------------------------------------------------- resolution


def _online() -> bool:
    flags = ("REALIGN_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    return not any(os.environ.get(f, "").lower() in ("1", "true", "yes") for f in flags)


def _download(url: str, dest: Path, sha256: str | None) -> Path:
    root = (cache_dir() / "data").resolve()
    if not dest.resolve().is_relative_to(root):  # e.g. a {language} that expands to "../"
        raise DataError(f"{url}: download target {dest} is outside the cache directory {root}; refused")
    if not sha256:
        raise DataError(f"{url}: no sha256 pinned for this download; refused")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=60) as response:
        payload = response.read()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != sha256:
        raise DataError(f"{url}: sha256 {digest} does not match the pinned {sha256}; not saved")
    tmp.write_bytes(payload)
    tmp.replace(dest)
    return dest


def resolve_source(spec: BenchmarkSpec, source: SourceSpec, language: str | None,
                   data_path: str | Path | None = None, spec_dir: Path | None = None) -> list[Path]:
    """Files for one source: explicit path -> the spec file's folder (a spec given by path) ->
    $REALIGN_DATA_DIR -> user cache -> pinned download."""
    rel = source.path.format(language=language or "")
    looked: list[str] = []
    roots: list[Path] = []
    if data_path is not None:
        explicit = Path(data_path)
        if not explicit.exists():
            raise DataError(f"benchmark {spec.name!r}: explicit data path {explicit} does not exist")
        if explicit.is_file():
            if len(spec.sources) <= 1:
                return [explicit]
            raise ConfigError(
                f"benchmark {spec.name!r} reads {len(spec.sources)} source files "
                f"({', '.join(s.path for s in spec.sources)}); data path {explicit} is one file. "
                "Pass a folder holding them (a data root), not a file."
            )
        # A data root holding "<folder>/<file>", or the benchmark folder itself.
        roots += [explicit, explicit.parent] if explicit.is_dir() else []
        looked.append(str(explicit))
    if spec_dir is not None:  # a user spec names its files relative to itself
        roots.append(spec_dir)
    roots += data_dirs()
    for root in roots:
        candidates = sorted(glob.glob(str(root / rel))) if glob.has_magic(rel) else (
            [str(root / rel)] if (root / rel).is_file() else [])
        if not candidates and data_path is not None and root == Path(data_path):
            tail = rel.split("/", 1)[-1]
            candidates = sorted(glob.glob(str(root / tail))) if glob.has_magic(tail) else (
                [str(root / tail)] if (root / tail).is_file() else [])
        files = [Path(c) for c in candidates if Path(c).name not in source.exclude]
        if files:
            return files
        looked.append(str(root / rel))
    failure = ""
    if source.url and _online():
        try:
            return [_download(source.url, cache_dir() / "data" / rel, source.sha256)]
        except OSError as exc:
            failure = f" Download of {source.url} failed ({exc})."
    how = (f"download {source.url} (sha256 {source.sha256}) to {cache_dir() / 'data' / rel}, or go online"
           if source.url else "copy the upstream files there (see the benchmark's PROVENANCE)")
    raise DataError(
        f"benchmark {spec.name!r}: data file {rel!r} not found; looked in: {', '.join(looked)}. "
        f"{failure} Set REALIGN_DATA_DIR to a folder holding {rel}, pass an explicit path, or {how}."
    )


# ---------------------------------------------------------------- readers (errors name file and row)


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from exc


def _read_rows(path: Path, header: bool) -> Iterator[tuple[int, Row]]:
    """Yield (1-based source row number, row) for JSON, JSONL(.gz), CSV and XLSX files."""
    name = path.name.removesuffix(".gz")
    if name.endswith(".jsonl"):
        for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: row {lineno}: malformed JSON ({exc.msg})") from exc
            if not isinstance(value, dict):
                raise DataError(f"{path}: row {lineno}: expected a JSON object, got {type(value).__name__}")
            yield lineno, value
    elif name.endswith(".json"):
        try:
            value = json.loads(_read_text(path))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: row {exc.lineno} (column {exc.colno}): malformed JSON ({exc.msg})") from exc
        if isinstance(value, dict):
            yield 0, value  # nested layout: one mapping
            return
        if not isinstance(value, list):
            raise DataError(f"{path}: expected a JSON array or object, got {type(value).__name__}")
        for index, entry in enumerate(value, start=1):
            if isinstance(entry, str):
                yield index, {"prompt": entry}
            elif isinstance(entry, dict):
                yield index, entry
            else:
                raise DataError(f"{path}: row {index}: expected a string or object, got {type(entry).__name__}")
    elif name.endswith(".csv"):
        reader = csv.reader(io.StringIO(_read_text(path), newline=""), strict=True)
        try:
            rows = list(reader)
        except csv.Error as exc:
            raise DataError(f"{path}: row {reader.line_num}: malformed CSV ({exc})") from exc
        yield from _table_rows(path, rows, header)
    elif name.endswith(".xlsx"):
        import pandas as pd

        frame = pd.read_excel(path, header=None, dtype=str, keep_default_na=False)
        yield from _table_rows(path, frame.values.tolist(), header)
    else:
        raise DataError(f"{path}: unsupported file type (expected .json, .jsonl[.gz], .csv or .xlsx)")


def _table_rows(path: Path, rows: list[list[Any]], header: bool) -> Iterator[tuple[int, Row]]:
    if header:
        if not rows:
            return
        columns = [str(c) for c in rows[0]]
        for number, values in enumerate(rows[1:], start=2):
            if not any(str(v).strip() for v in values):
                continue
            if len(values) != len(columns):
                raise DataError(f"{path}: row {number}: {len(values)} fields, the header has {len(columns)}")
            yield number, dict(zip(columns, values, strict=True))
    else:
        for number, values in enumerate(rows, start=1):
            yield number, {str(i): v for i, v in enumerate(values)}


# ---------------------------------------------------------------- the benchmark


class Benchmark:
    """A benchmark: a spec plus loading (resolution, filters, seeded sampling) into Items."""

    def __init__(self, spec: BenchmarkSpec, origin: Path | None = None) -> None:
        self.spec = spec
        self.origin = origin  # the YAML file of a spec given by path (its sources resolve next to it)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def scorer(self) -> str:
        return self.spec.default_scorer

    @property
    def reads(self) -> Reads:
        """What its scorer reads: saved generations (and verdicts), or the model itself."""
        return get_scorer(self.scorer).reads

    @property
    def languages(self) -> list[str]:
        return list(self.spec.languages)

    def with_fields(self, **mapping: Any) -> Benchmark:
        """A copy with a different column mapping: ``prompt="Behavior"``, ``metadata=["source"]``."""
        overrides = parse_field_overrides(self.name, mapping)
        fields = FieldMap.model_validate({**self.spec.fields.model_dump(), **overrides.given()})
        # a new validated spec, not model_copy(update=...) (which skips validation)
        spec = BenchmarkSpec.model_validate({**self.spec.model_dump(), "fields": fields})
        return Benchmark(spec, self.origin)

    def resolve(self, data_path: str | Path | None = None,
                languages: list[str] | None = None) -> list[tuple[SourceSpec, str | None, Path]]:
        if not self.spec.sources:
            if data_path is None:
                raise ConfigError(f"benchmark {self.name!r} reads your own file: pass data_path (--data FILE)")
            path = Path(data_path)
            if not path.is_file():
                raise DataError(f"benchmark {self.name!r}: data file {path} not found")
            return [(SourceSpec(path=str(path)), None, path)]
        out: list[tuple[SourceSpec, str | None, Path]] = []
        for source in self.spec.sources:
            if source.language is not None:
                langs: list[str | None] = [source.language] if (
                    languages is None or source.language in languages) else []
            elif "{language}" in source.path:
                langs = list(languages or self.spec.languages)
            else:
                langs = [None]
            for lang in langs:
                spec_dir = self.origin.parent if self.origin is not None else None
                for file in resolve_source(self.spec, source, lang, data_path, spec_dir):
                    out.append((source, lang, file))
        return out

    def _check_choice(self, what: str, asked: list[str] | None, valid: list[str]) -> None:
        unknown = [a for a in asked or [] if a not in valid]
        if unknown:
            raise ConfigError(
                f"benchmark {self.name!r}: unknown {what} {', '.join(map(repr, unknown))}; "
                f"valid: {', '.join(valid) or '(none)'}"
            )

    def load(self, limit: int | None = None, sample: int | None = None, seed: int = 0,
             languages: list[str] | None = None, categories: list[str] | None = None,
             data_path: str | Path | None = None) -> list[Item]:
        """Items after the language/category filters, a seeded sample of `sample`, then the first `limit`."""
        if self.spec.languages:
            self._check_choice("language", languages, self.spec.languages)
        items = self._all_items(data_path, languages)
        if languages and not self.spec.languages:
            valid = sorted({i.language for i in items if i.language})
            self._check_choice("language", languages, valid)
            items = [i for i in items if i.language in languages]
        if categories:
            valid = sorted({c for i in items for c in (i.category, i.subcategory) if c})
            self._check_choice("category", categories, valid)
            items = [i for i in items if i.category in categories or i.subcategory in categories]
        if sample is not None and sample < len(items):
            chosen = sorted(random.Random(seed).sample(range(len(items)), sample))
            items = [items[i] for i in chosen]
        return items[:limit] if limit is not None else items

    def _all_items(self, data_path: str | Path | None, languages: list[str] | None) -> list[Item]:
        spec = self.spec
        resolved = self.resolve(data_path, languages)
        # An id names the file only when one language has several files (xsafety, somf_eval).
        files_per_language: dict[str | None, int] = {}
        for _, lang, _path in resolved:
            files_per_language[lang] = files_per_language.get(lang, 0) + 1
        multi_source = any(count > 1 for count in files_per_language.values())
        items: list[Item] = []
        quirk = QUIRKS[spec.quirk] if spec.quirk else None
        for source, lang, path in resolved:
            file_category = source.category
            if spec.category_from_filename:
                match = re.match(spec.category_from_filename, path.name.split(".")[0])
                stem = match.group("category") if match else path.stem
                file_category = spec.category_aliases.get(stem, stem)
            for number, row, category, subcategory in self._rows(path):
                if source.where and not self._matches(path, number, row, source.where):
                    continue
                for item_lang, text_row in self._per_language(row, lang, languages):
                    try:
                        data = quirk(text_row) if quirk else dict(text_row)
                    except (KeyError, ValueError, SyntaxError) as exc:
                        raise DataError(f"{path}: row {number}: cannot parse ({exc!r})") from exc
                    item = self._make_item(path, number, data, item_lang, category or file_category,
                                           subcategory, (file_category or path.stem) if multi_source else None)
                    if source.split is None or SPLITS[source.split](item):
                        items.extend(self._jailbroken(item) if spec.jailbreaks else [item])
        first: dict[str, Item] = {}
        for item in items:  # an id column with a repeat would make two items one (generation resumes by id)
            seen = first.setdefault(item.id, item)
            if seen is not item:
                m, s = item.metadata, seen.metadata
                raise DataError(f"{m['source_file']}: row {m['source_row']}: item id {item.id!r} repeats row "
                                f"{s['source_row']} of {s['source_file']}; ids must be unique (check the id column)")
        return items

    def _jailbroken(self, item: Item) -> list[Item]:
        """One item per jailbreak template, the question inside it (ids ``<plain id>/<template>``)."""
        return [item.model_copy(update={
            "id": f"{item.id}/{name}", "prompt": apply_jailbreak(name, item.prompt), "subcategory": name,
            "metadata": {**item.metadata, "jailbreak": name, "question": item.prompt}})
            for name in self.spec.jailbreaks]

    def _rows(self, path: Path) -> Iterator[tuple[int, Row, str | None, str | None]]:
        if self.spec.layout != "nested":
            for number, row in _read_rows(path, self.spec.header):
                yield number, row, None, None
            return
        strip = self.spec.strip_key_suffix
        for _, tree in _read_rows(path, self.spec.header):
            index = 0
            for cat, subtree in tree.items():
                if not isinstance(subtree, dict):
                    raise DataError(f"{path}: {cat!r}: expected {{subcategory: [questions]}}")
                for sub, questions in subtree.items():
                    if not isinstance(questions, list):
                        raise DataError(f"{path}: {cat!r}/{sub!r}: expected a list of questions")
                    clean_sub = sub.removesuffix(strip) if strip else sub
                    for question in questions:
                        index += 1
                        yield index, {"prompt": question, "raw_subcategory": sub}, cat, clean_sub

    def _matches(self, path: Path, number: int, row: Row, where: dict[str, str]) -> bool:
        """Whether ``row`` has every ``where`` column equal to its value (a missing column is an error)."""
        return all(str(self._column(path, number, row, column)) == value for column, value in where.items())

    def _per_language(self, row: Row, lang: str | None,
                      languages: list[str] | None) -> Iterator[tuple[str | None, Row]]:
        if self.spec.layout != "language_columns":
            yield lang, row
            return
        for code in languages or self.spec.languages:
            if code not in row:
                raise DataError(f"{self.name}: language column {code!r} missing; columns: {', '.join(row)}")
            yield code, {**row, "prompt": row[code]}

    def _column(self, path: Path, number: int, row: Row, column: str) -> Any:
        if column not in row:
            raise DataError(
                f"{path}: row {number}: column {column!r} (from the column mapping) not found; "
                f"columns present: {', '.join(map(str, row))}"
            )
        return row[column]

    def _mapped(self, path: Path, number: int, row: Row, name: str) -> Any:
        """The value of item field ``name``: its mapped column (which must exist), else the column of
        its own name when conventional columns are on; an empty string counts as absent."""
        column = getattr(self.spec.fields, name)
        if column is not None:
            value = self._column(path, number, row, column)
        elif self.spec.conventional_columns and name in CONVENTIONAL:
            value = row.get(name)
        else:
            return None
        return None if value is None or (isinstance(value, str) and not value.strip()) else value

    def _template(self, path: Path, number: int, row: Row, prompt_column: str) -> str:
        """The prompt template filled from the row plus the mapped fields ({prompt} is the mapped
        prompt column); a part of a list template whose fields are all empty is left out with its
        separator, so a row without context gets no leading separator."""
        template = self.spec.prompt_template
        assert template is not None
        values = dict(row)
        if prompt_column in row:
            values["prompt"] = row[prompt_column]
        for name in CONVENTIONAL:
            column = getattr(self.spec.fields, name)
            if column is not None:  # a mapped column must exist (the error names it, not the field)
                values[name] = self._column(path, number, row, column)
        parts = [template] if isinstance(template, str) else template
        kept: list[str] = []
        for part in parts:
            used = [f.split(".")[0].split("[")[0] for _, f, _, _ in string.Formatter().parse(part) if f]
            missing = [f for f in used if f not in values]
            if missing:
                raise DataError(f"{path}: row {number}: prompt template needs column {missing[0]!r}; "
                                f"columns present: {', '.join(map(str, row))}")
            if not isinstance(template, str) and used and all(
                    values[f] is None or (isinstance(values[f], str) and not values[f].strip()) for f in used):
                continue
            try:
                kept.append(part.format(**{k: "" if v is None else v for k, v in values.items()}))
            except (KeyError, IndexError, ValueError) as exc:
                raise DataError(f"{path}: row {number}: prompt template part {part!r} cannot be filled "
                                f"({exc!r})") from exc
        return self.spec.template_separator.join(kept)

    def _make_item(self, path: Path, number: int, row: Row, lang: str | None, category: str | None,
                   subcategory: str | None, source_key: str | None) -> Item:
        fields = self.spec.fields
        use_own = self.spec.layout != "rows" or (self.spec.quirk is not None and "prompt" in row)
        prompt_column = "prompt" if use_own else fields.prompt
        if self.spec.prompt_template:
            prompt = self._template(path, number, row, prompt_column)
        else:
            value = self._column(path, number, row, prompt_column)
            if not isinstance(value, str):
                raise DataError(f"{path}: row {number}: prompt column {prompt_column!r} is "
                                f"{'null' if value is None else type(value).__name__ + ' ' + repr(value)}; "
                                "expected text")
            prompt = value
        reference = row.get("_reference")
        if reference is None:
            reference = self._mapped(path, number, row, "reference")
        category = self._text(self._mapped(path, number, row, "category"), category)
        category = row.get("_category", category)
        subcategory = self._text(self._mapped(path, number, row, "subcategory"), subcategory)
        lang = self._text(self._mapped(path, number, row, "language"), lang)
        metadata: dict[str, Any] = {"source_file": path.name, "source_row": number}
        for column in fields.metadata:
            metadata[column] = self._column(path, number, row, column)
        context = self._mapped(path, number, row, "context")
        if context is not None:
            metadata["context"] = context
        for extra in ("raw_subcategory", "history", "choices", "code_prompt", "solution"):
            if extra in row:
                metadata[extra] = row[extra]
        row_id = self._text(self._mapped(path, number, row, "id"), str(number))
        assert row_id is not None
        parts = [self.name] + ([lang] if lang else []) + ([source_key] if source_key else [])
        if not row_id.startswith(self.name) and "/" in row_id:
            parts = [self.name]  # upstream ids like "HumanEval/0" already carry their namespace
        return Item(id="/".join([*parts, row_id]), benchmark=self.name, prompt=prompt,
                    system_prompt=self.spec.system_prompt, language=lang, category=category,
                    subcategory=subcategory, reference=None if reference is None else str(reference),
                    metadata=metadata)

    @staticmethod
    def _text(value: Any, default: str | None) -> str | None:
        return default if value is None else str(value)

    def to_dataset(self, **load_kwargs: Any) -> Any:
        """The loaded items as a `datasets.Dataset` (for map/filter pipelines and the hub)."""
        import datasets

        return datasets.Dataset.from_list([i.model_dump() for i in self.load(**load_kwargs)])


# ---------------------------------------------------------------- registry

BENCHMARKS: Registry[Benchmark] = Registry("benchmark", "realign.benchmarks")


def load_spec(path_or_text: str | Path) -> Benchmark:
    """A Benchmark from a YAML spec file (user benchmarks need no code); its relative source paths
    resolve next to the file first."""
    path = Path(path_or_text)
    if not path.is_file():
        raise ConfigError(f"benchmark spec {path}: file not found")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), str(path))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read benchmark spec ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a benchmark spec is a mapping (name, kind, sources, fields ...), "
                          f"got {type(data).__name__}")
    try:
        return Benchmark(BenchmarkSpec.model_validate(data), path.resolve())
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                loc = err["loc"]
                models: dict[str, type[BaseModel]] = {"fields": FieldMap, "sources": SourceSpec}
                parent = models.get(str(loc[0]), BenchmarkSpec) if len(loc) > 1 else BenchmarkSpec
                lines.append(f"{'.'.join(map(str, loc[:-1])) or '(top level)'}: unknown key "
                             f"{name_unknown([str(loc[-1])], list(parent.model_fields))}")
            else:
                lines.append(f"{where}: {str(err['msg']).removeprefix('Value error, ')}")
        raise ConfigError(f"{path}: invalid benchmark spec: " + "; ".join(lines)) from None


def is_spec_path(name: str | Path) -> bool:
    """Whether a benchmark reference names a YAML spec file rather than a registered benchmark."""
    return str(name).endswith((".yaml", ".yml"))


def _register_builtins() -> None:
    for entry in sorted(resources.files("benchmarks.specs").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            data = load_yaml(entry.read_text(encoding="utf-8"), f"benchmarks/specs/{entry.name}")
            BENCHMARKS.add(data["name"], Benchmark(BenchmarkSpec.model_validate(data)))


_register_builtins()


def get_benchmark(name: str | Path, **fields: Any) -> Benchmark:
    """A registered benchmark (or a YAML spec path); keyword args override its column mapping."""
    if is_spec_path(name):
        bench = load_spec(name)
    else:
        entry: Any = BENCHMARKS.get(str(name))
        bench = entry if isinstance(entry, Benchmark) else (
            Benchmark(entry) if isinstance(entry, BenchmarkSpec) else entry())
    return bench.with_fields(**fields) if fields else bench


def list_benchmarks() -> list[str]:
    return BENCHMARKS.names()
