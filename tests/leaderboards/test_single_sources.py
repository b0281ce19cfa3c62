"""One declaration per fact: the cells table and CellRecord, the experiment's generation settings and GenerationConfig."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy import Column, MetaData, String, Table

from harness.core.errors import StoreError
from harness.experiment._config import GenerationSettings
from harness.generate import GenerationConfig
from leaderboards import CellRecord
from leaderboards import _schema as S
from leaderboards._store import CELL_BOOKKEEPING, check_record_columns


def test_cell_record_and_cells_table_declare_the_same_columns() -> None:
    check_record_columns(CellRecord, S.cells, CELL_BOOKKEEPING)  # the shipped pair agrees

    class WithField(CellRecord):
        seconds_spent_waiting: float | None = None

    with pytest.raises(StoreError, match=r"fields without a column \['seconds_spent_waiting'\]"):
        check_record_columns(WithField, S.cells, CELL_BOOKKEEPING)
    wider = Table("cells", MetaData(), *(Column(c.name, c.type) for c in S.cells.columns), Column("gpu", String(8)))
    with pytest.raises(StoreError, match=r"columns without a field \['gpu'\]"):
        check_record_columns(CellRecord, wider, CELL_BOOKKEEPING)


@pytest.mark.parametrize(
    "bad",
    [
        {"max_new_tokens": 0},
        {"max_new_tokens": 40000},
        {"top_p": 0.0},
        {"temperature": 9.0},
        {"stop": [""]},
        {"num_samples": 2},
    ],
)
def test_generation_settings_allow_exactly_what_generation_config_allows(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GenerationConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(
        ValidationError, match=next(iter(bad)) if "stop" not in bad and "num_samples" not in bad else None
    ):
        GenerationSettings(**bad)  # type: ignore[arg-type]


def test_generation_settings_become_the_backend_config() -> None:
    settings = GenerationSettings(max_new_tokens=8, temperature=0.7, num_samples=2, stop=["\n\n"])
    assert settings.decoding(seed=3) == GenerationConfig(
        max_new_tokens=8, temperature=0.7, num_samples=2, stop=("\n\n",), seed=3
    )
