"""The results-store schema (SQLAlchemy Core, portable between SQLite and Postgres).

Natural keys are the primary keys, so every write is an idempotent upsert: re-running a cell
rewrites the same rows and never duplicates one. JSON values are stored as canonical JSON text
(sorted keys) so SQLite and Postgres hold byte-identical values.

Version history: 1 — initial schema. 2 — cost columns on ``cells`` (wall seconds of merge, mask
training, generation, judging and scoring; tokens generated); a version-1 store is migrated in place
when opened (the new columns are NULL for its cells: not recorded). 3 — calibration cost columns.
4 — ``cells.reference_role`` (which reference row a cell is, NULL for realignment methods), filled
in for older stores from the method names the reference rows then had (sft, aligned, original).
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

SCHEMA_VERSION = 4

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("config", Text, nullable=False),  # canonical JSON of the experiment
    Column("config_hash", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # running | done | failed | interrupted
    Column("started_at", String(32), nullable=False),  # ISO-8601 UTC
    Column("finished_at", String(32)),
    Column("provenance", Text, nullable=False),  # canonical JSON (collect_provenance)
    Column("git_sha", String(64)),
    Column("realign_version", String(64)),
    Column("counts", Text),  # canonical JSON of the runner's counters
)

cells = Table(
    "cells",
    metadata,
    Column("cell_id", String(64), primary_key=True),  # content hash of the cell's spec and inputs
    Column("run_id", String(64), ForeignKey("runs.run_id"), nullable=False),  # the run that first wrote it
    Column("method", String(128), nullable=False),  # canonical name: sft, aligned, resta, somf, ...
    Column("method_label", String(256), nullable=False),  # variant label, e.g. resta[gamma=0.5]
    Column("reference_role", String(16)),  # original | aligned | finetuned; NULL: a realignment method
    Column("params", Text, nullable=False),
    Column("finetuned", String(256), nullable=False),
    Column("task", String(128)),
    Column("checkpoint_hash", String(128)),
    Column("benchmark", String(128), nullable=False),
    Column("benchmark_label", String(256), nullable=False),
    Column("benchmark_kind", String(16)),  # safety | utility
    Column("benchmark_options", Text, nullable=False),
    Column("primary_metric", String(128)),
    Column("backend", String(64)),
    Column("gen_config_hash", String(128)),
    Column("judge_id", String(128)),
    Column("judge_hash", String(128)),
    Column("chat_template_hash", String(128)),
    Column("extra", Text, nullable=False),
    # cost of the cell (NULL: not recorded). A checkpoint's merge/training time and a shared
    # generation's time appear on every cell built from it.
    Column("merge_seconds", Float),
    Column("train_seconds", Float),  # mask training (SOMF), apart from the merge
    Column("calibration_seconds", Float),  # the calibration stage (statistics on data), apart from the merge
    Column("calibration_examples", Integer),  # examples that calibration ran on
    Column("generate_seconds", Float),
    Column("judge_seconds", Float),  # all judges of the cell
    Column("score_seconds", Float),  # scorers (code execution for pass@k, the model for NLL/log-likelihood)
    Column("tokens_generated", Integer),
    Column("status", String(16), nullable=False),  # pending | done | failed
    Column("error", Text),
    Column("updated_at", String(32), nullable=False),
)

run_cells = Table(
    "run_cells",
    metadata,
    Column("run_id", String(64), ForeignKey("runs.run_id"), primary_key=True),
    Column("cell_id", String(64), ForeignKey("cells.cell_id"), primary_key=True),
    Column("status", String(16), nullable=False),  # pending | done | cached | failed
    Column("updated_at", String(32), nullable=False),
)

items = Table(
    "items",
    metadata,
    Column("cell_id", String(64), ForeignKey("cells.cell_id"), primary_key=True),
    Column("item_id", String(256), primary_key=True),
    Column("benchmark", String(128)),
    Column("language", String(32)),
    Column("category", String(256)),
    Column("subcategory", String(256)),
    Column("prompt_hash", String(128)),
)

generations = Table(
    "generations",
    metadata,
    Column("cell_id", String(64), ForeignKey("cells.cell_id"), primary_key=True),
    Column("item_id", String(256), primary_key=True),
    Column("sample_index", Integer, primary_key=True),
    Column("completion", Text, nullable=False),
    Column("generation_hash", String(128), nullable=False),
    Column("prompt_hash", String(128)),
    Column("model_hash", String(128)),
    Column("finish_reason", String(32)),
    Column("num_tokens", Integer),
)

verdicts = Table(
    "verdicts",
    metadata,
    Column("cell_id", String(64), ForeignKey("cells.cell_id"), primary_key=True),
    Column("item_id", String(256), primary_key=True),
    Column("sample_index", Integer, primary_key=True),
    Column("judge_id", String(128), primary_key=True),
    Column("judge_hash", String(128), nullable=False),
    Column("label", String(16), nullable=False),
    Column("score", Float),
    Column("rationale", Text),
    Column("generation_hash", String(128)),
)

item_scores = Table(
    "item_scores",
    metadata,
    Column("cell_id", String(64), ForeignKey("cells.cell_id"), primary_key=True),
    Column("item_id", String(256), primary_key=True),
    Column("sample_index", Integer, primary_key=True),
    Column("metric", String(128), primary_key=True),
    Column("value", Float, nullable=False),
)

scores = Table(
    "scores",
    metadata,
    Column("cell_id", String(64), ForeignKey("cells.cell_id"), primary_key=True),
    Column("benchmark", String(128), primary_key=True),
    Column("metric", String(128), primary_key=True),
    Column("subset_key", String(512), primary_key=True),  # canonical JSON of `subset` ("{}" = all)
    Column("subset", Text, nullable=False),
    Column("value", Float, nullable=False),
    Column("ci_low", Float),
    Column("ci_high", Float),
    Column("n", Integer, nullable=False),
    Column("higher_is_better", Boolean, nullable=False),
)

Index("ix_run_cells_cell", run_cells.c.cell_id)
Index("ix_cells_status", cells.c.status)

COST_COLUMNS = (
    "merge_seconds",
    "train_seconds",
    "generate_seconds",
    "judge_seconds",
    "score_seconds",
    "tokens_generated",
)
# what each version adds: (table, column DDL), applied in order by Store when it opens an older store
MIGRATIONS: dict[int, list[tuple[str, str]]] = {
    2: [("cells", f"{name} {'INTEGER' if name == 'tokens_generated' else 'FLOAT'}") for name in COST_COLUMNS],
    3: [("cells", "calibration_seconds FLOAT"), ("cells", "calibration_examples INTEGER")],
    4: [("cells", "reference_role VARCHAR(16)")],
}
# rows a version's new columns are filled with, after its columns are added (SQL run in the migration)
BACKFILLS: dict[int, list[str]] = {
    # the reference rows were the baselines of these names before the role was recorded
    4: [
        "UPDATE cells SET reference_role = CASE method WHEN 'original' THEN 'original' WHEN 'aligned' THEN "
        "'aligned' WHEN 'sft' THEN 'finetuned' END"
    ],
}

ALL_TABLES = ("meta", "runs", "cells", "run_cells", "items", "generations", "verdicts", "item_scores", "scores")
