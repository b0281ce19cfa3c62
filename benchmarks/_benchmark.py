"""The Benchmark: a spec plus loading (resolution, filters, seeded sampling, jailbreak variants) into Items."""

from __future__ import annotations

import random
import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks._jailbreaks import apply_jailbreak
from benchmarks._quirks import QUIRKS
from benchmarks._readers import Row, read_rows
from benchmarks._sources import resolve_source
from benchmarks._spec import CONVENTIONAL, BenchmarkSpec, FieldMap, SourceSpec, parse_field_overrides
from benchmarks._splits import SPLITS
from benchmarks.scoring import Reads, get_scorer
from harness.core.errors import ConfigError, DataError
from harness.core.records import Item


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

    def resolve(
        self, data_path: str | Path | None = None, languages: list[str] | None = None
    ) -> list[tuple[SourceSpec, str | None, Path]]:
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
                langs: list[str | None] = (
                    [source.language] if (languages is None or source.language in languages) else []
                )
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

    def load(
        self,
        limit: int | None = None,
        sample: int | None = None,
        seed: int = 0,
        languages: list[str] | None = None,
        categories: list[str] | None = None,
        data_path: str | Path | None = None,
    ) -> list[Item]:
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
                    item = self._make_item(
                        path,
                        number,
                        data,
                        item_lang,
                        category or file_category,
                        subcategory,
                        (file_category or path.stem) if multi_source else None,
                    )
                    if source.split is None or SPLITS[source.split](item):
                        items.extend(self._jailbroken(item) if spec.jailbreaks else [item])
        first: dict[str, Item] = {}
        for item in items:  # an id column with a repeat would make two items one (generation resumes by id)
            seen = first.setdefault(item.id, item)
            if seen is not item:
                m, s = item.metadata, seen.metadata
                raise DataError(
                    f"{m['source_file']}: row {m['source_row']}: item id {item.id!r} repeats row "
                    f"{s['source_row']} of {s['source_file']}; ids must be unique (check the id column)"
                )
        return items

    def _jailbroken(self, item: Item) -> list[Item]:
        """One item per jailbreak template, the question inside it (ids ``<plain id>/<template>``)."""
        return [
            item.model_copy(
                update={
                    "id": f"{item.id}/{name}",
                    "prompt": apply_jailbreak(name, item.prompt),
                    "subcategory": name,
                    "metadata": {**item.metadata, "jailbreak": name, "question": item.prompt},
                }
            )
            for name in self.spec.jailbreaks
        ]

    def _rows(self, path: Path) -> Iterator[tuple[int, Row, str | None, str | None]]:
        if self.spec.layout != "nested":
            for number, row in read_rows(path, self.spec.header):
                yield number, row, None, None
            return
        strip = self.spec.strip_key_suffix
        for _, tree in read_rows(path, self.spec.header):
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

    def _per_language(
        self, row: Row, lang: str | None, languages: list[str] | None
    ) -> Iterator[tuple[str | None, Row]]:
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
                raise DataError(
                    f"{path}: row {number}: prompt template needs column {missing[0]!r}; "
                    f"columns present: {', '.join(map(str, row))}"
                )
            if (
                not isinstance(template, str)
                and used
                and all(values[f] is None or (isinstance(values[f], str) and not values[f].strip()) for f in used)
            ):
                continue
            try:
                kept.append(part.format(**{k: "" if v is None else v for k, v in values.items()}))
            except (KeyError, IndexError, ValueError) as exc:
                raise DataError(
                    f"{path}: row {number}: prompt template part {part!r} cannot be filled ({exc!r})"
                ) from exc
        return self.spec.template_separator.join(kept)

    def _make_item(
        self,
        path: Path,
        number: int,
        row: Row,
        lang: str | None,
        category: str | None,
        subcategory: str | None,
        source_key: str | None,
    ) -> Item:
        fields = self.spec.fields
        use_own = self.spec.layout != "rows" or (self.spec.quirk is not None and "prompt" in row)
        prompt_column = "prompt" if use_own else fields.prompt
        if self.spec.prompt_template:
            prompt = self._template(path, number, row, prompt_column)
        else:
            value = self._column(path, number, row, prompt_column)
            if not isinstance(value, str):
                raise DataError(
                    f"{path}: row {number}: prompt column {prompt_column!r} is "
                    f"{'null' if value is None else type(value).__name__ + ' ' + repr(value)}; "
                    "expected text"
                )
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
        return Item(
            id="/".join([*parts, row_id]),
            benchmark=self.name,
            prompt=prompt,
            system_prompt=self.spec.system_prompt,
            language=lang,
            category=category,
            subcategory=subcategory,
            reference=None if reference is None else str(reference),
            metadata=metadata,
        )

    @staticmethod
    def _text(value: Any, default: str | None) -> str | None:
        return default if value is None else str(value)

    def to_dataset(self, **load_kwargs: Any) -> Any:
        """The loaded items as a `datasets.Dataset` (for map/filter pipelines and the hub)."""
        import datasets

        return datasets.Dataset.from_list([i.model_dump() for i in self.load(**load_kwargs)])
