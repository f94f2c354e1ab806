"""Analyst access that never blocks a load, and the Parquet lake.

Which tables analysts read is declared with the tables (`Table.analysts` in ddl.py): the copy, the
grants and the lake follow from it.

- The step after a writer's commits is explicit: a writer opens the warehouse with `WriteSession`,
  and leaving it runs `refresh_after_commit` (also when the writer failed after a commit) and says
  what it did (`AccessRefresh`, shown by Dagster as materialization metadata). `Warehouse.close()`
  only closes. A refresh that fails is logged, never raised: the load is committed.
- DuckDB (one writer holds the file): analysts open `$INSERVICE_HOME/analyst/warehouse.duckdb`
  read-only, a catalog: courses, attendance, history and uploads are views over Parquet parts, one per
  unit (`analyst/parts/`); the small analyst tables are copied into it. A write notes the units it
  touched in `analyst_pending` (in its own transaction), and the refresh after the commit rewrites only
  those units' parts (rows only added: a new file beside the part), then a new catalog renamed over
  the published one — its cost follows the change, not the warehouse. Only analyst tables are ever
  written there. A connection already open keeps its catalog and the files it reads (removed once no
  process holds a read lock on them); the next one sees the new load. Nobody but the loader opens
  the warehouse file itself. The catalog records the commit number it was made from
  (`snapshot_info`): a writer that finds it behind (a refresh killed after its commit) refreshes it
  when its session ends, even when it wrote nothing itself.
- PostgreSQL (MVCC: readers and the loader do not wait on each other): a read-only role with SELECT
  on the analyst tables only; no feed register, no corrections' workbook register, no temp staging
  (the pseudonymisation key is never in the database at all).
- The lake: the analyst tables as Hive-partitioned Parquet (year=/month=), which Spark, Trino and
  DuckDB read as partitioned tables; written from either backend by streaming batches.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from inservice.config import Settings
from inservice.warehouse import ddl
from inservice.warehouse.backend import month_text
from inservice.warehouse.postgres import revoke_blocking_functions
from inservice.warehouse.store import COMMIT_SEQ, Warehouse, failpoint

LOG = logging.getLogger("inservice.warehouse")
# The registers as they stand and through time, the spec's code lists, and the course × code bridges
# (views in the warehouse, tables in the copy and the lake). Not school_changes (letters, who imported).
BRIDGES = {t.name: t for t in ddl.BRIDGE_VIEWS}
REFERENCE_TABLES = (ddl.UNIT_VERSIONS.name, ddl.SCHOOL_REGISTER.name, *(t.name for t in ddl.REFERENCE_TABLES),
                    *BRIDGES)
ANALYST_ROLE = Settings.analyst_role  # the default of INSERVICE_ANALYST_ROLE
SNAPSHOT_NAME = "warehouse.duckdb"
COPY_SEQ = "analyst_copy_seq"  # warehouse_meta: the commit number the published copy was made from
_WORK = ".refresh-"  # private folders (0700) a copy is built in: `.refresh-<pid>-<random>`
PARTS = "parts"  # beside the catalog: <table>/unit_code=<unit>/*.parquet, catalogs/<id>.duckdb and .json
CURRENT = "CURRENT"  # in PARTS: the id of the published catalog
BUILDING = "BUILDING"  # in PARTS: the id of the catalog a refresh is building (removed once published)
MANIFEST_VERSION = 2
PART_FILES = 8  # files a unit's part may gather by additions before it is written again as one
# The large analyst tables, read as Parquet parts per unit, rewritten only where a write changed them:
# the column a write sets to its time, and the key whose rows a write replaces (None: append-only).
PARTED: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "courses": ("loaded_at", ddl.COURSES.key), "attendance": ("loaded_at", ddl.ATTENDANCE.key),
    "history": ("changed_at", None), "uploads": ("processed_at", None)}

# Lake partitioning: each table's year/month (courses by start date, attendance by its course's,
# uploads and their findings by the data month, else the month received).
LAKE_QUERIES = {
    "courses": "SELECT c.*, CAST(extract(year FROM c.start_date) AS INTEGER) AS year, "
               "CAST(extract(month FROM c.start_date) AS INTEGER) AS month FROM main.courses c",
    "attendance": "SELECT a.*, CAST(extract(year FROM c.start_date) AS INTEGER) AS year, "
                  "CAST(extract(month FROM c.start_date) AS INTEGER) AS month FROM main.attendance a "
                  "JOIN main.courses c ON c.unit_code = a.unit_code AND c.course_code = a.course_code",
    "uploads": "SELECT u.*, {ym} AS ym FROM main.uploads u WHERE u.area = 'production'",
    "findings": "SELECT f.*, {ym} AS ym FROM main.findings f JOIN main.uploads u ON u.upload_id = f.upload_id "
                "WHERE u.area = 'production'",
    "units": "SELECT * FROM main.units",
    **{t: f"SELECT * FROM main.{t}" for t in REFERENCE_TABLES},
    **{t.name: f"SELECT * FROM main.{t.name}" for t in ddl.PLAN_TABLES},  # partitioned by school year
}
UNPARTITIONED = frozenset({"units", *REFERENCE_TABLES})  # one file each
PARTITION = pa.schema([("year", pa.int32()), ("month", pa.int32())])
PLAN_LAKE = {t.name for t in ddl.PLAN_TABLES}
PLAN_PARTITION = pa.schema([("school_year", pa.int32())])


def analyst_tables(wh: Warehouse) -> list[str]:
    """The analyst tables present in this warehouse (ddl: `Table.analysts`; the publication tables
    once the first publication has created them), and the bridge views. Not: feeds (connection
    settings' names), feed_watermarks, correction registers (they hold the masked original values),
    unit_state_log and school_changes (letters), upload_receipts, warehouse_meta, the testing area."""
    present = {r[0] for r in wh.con.execute("""SELECT table_name FROM information_schema.tables
        WHERE table_schema = 'main' AND table_catalog = current_database()""").fetchall()}
    tables = [t for t in ddl.analyst_tables() if t.name in present]
    return ([t.name for t in tables if not t.publication] + [v for v in BRIDGES if v in present]
            + [t.name for t in tables if t.publication])


# --- the step after a writer's commits ------------------------------------------------------------------
@dataclass(frozen=True)
class AccessRefresh:
    """What the step after a writer's commits did for the analysts."""

    action: str  # copy (DuckDB: a new read-only copy), grants (PostgreSQL: the role's SELECT), none, failed
    at: datetime
    tables: int = 0  # analyst tables copied or granted
    rows: int = 0  # rows in the new copy (DuckDB)
    seconds: float = 0.0
    note: str = ""  # why nothing was done, or what failed

    def metadata(self) -> dict[str, str | int | float]:
        """As Dagster materialization metadata (plain values)."""
        return {"analyst_access": self.action, "analyst_refreshed_at": self.at.isoformat(),
                "analyst_tables": self.tables, "analyst_rows": self.rows,
                "analyst_seconds": round(self.seconds, 3), **({"analyst_note": self.note} if self.note else {})}


def refresh_after_commit(wh: Warehouse, settings: Settings, quiet: bool = False) -> AccessRefresh:
    """The explicit step after a writer's commits: a new read-only copy (DuckDB), or the role's grants
    on the analyst tables (PostgreSQL, when the role exists; `inservice warehouse grant-analyst`
    creates it). Also when this writer committed nothing but finds the copy behind the warehouse (an
    earlier writer killed before its refresh). Never raises: the load is committed, a stale analyst
    copy must not fail it (the failure is logged, and the next writer catches up)."""
    started, at = time.monotonic(), datetime.now(UTC)

    def outcome(action: str, tables: int = 0, rows: int = 0, note: str = "") -> AccessRefresh:
        return AccessRefresh(action, at, tables, rows, time.monotonic() - started, note)

    try:
        # a connection the server ended (the failure is reported already) can refresh nothing
        if not wh.alive:
            return outcome("none", note="the connection is closed")
        if not (wh.committed or analyst_copy_stale(wh, settings)):
            return outcome("none", note="nothing committed, the analysts' access is current")
        if wh.backend.server:
            if not wh.con.execute("SELECT 1 FROM pg_roles WHERE rolname = ?", [settings.analyst_role]).fetchall():
                return outcome("none", note=f"no role {settings.analyst_role} (grant-analyst creates it)")
            return outcome("grants", len(_grant_select(wh, settings.analyst_role)))
        if not settings.analyst_copy:
            return outcome("none", note="the analysts' copy is turned off (INSERVICE_ANALYST_COPY)")
        _, tables, rows = _publish_copy(wh, settings)
        return outcome("copy", tables, rows)
    except Exception as exc:  # the load is committed: a stale analyst copy must not fail it
        LOG.warning("analyst access not refreshed (the warehouse itself is up to date): %s: %s",
                    type(exc).__name__, exc, extra={"log_only": quiet})
        return outcome("failed", note=f"{type(exc).__name__}: {exc}")


class WriteSession:
    """The warehouse opened by a writer (a CLI command, a Dagster step), and the step after its
    commits made explicit: leaving the `with` block runs `refresh_after_commit` (also when the block
    failed after a commit), keeps its outcome in `.refresh`, then closes the warehouse.

        session = WriteSession(settings)
        with session as wh:
            ...  # wh.transaction(): commits
        session.refresh.metadata()  # what the analysts' refresh did
    """

    def __init__(self, settings: Settings, wait: float | None = None) -> None:
        self.settings = settings
        self.wait = wait
        self.refresh: AccessRefresh | None = None
        self._wh: Warehouse | None = None

    def __enter__(self) -> Warehouse:
        self._wh = Warehouse(self.settings, wait=self.wait)
        return self._wh

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        wh, self._wh = self._wh, None
        if wh is None:
            return
        try:
            # a session that failed: its own error is what the operator reads; a refresh failing after it
            # (the same full disk) goes to the log only
            self.refresh = refresh_after_commit(wh, self.settings, quiet=exc_type is not None)
        finally:
            wh.close()


def analyst_copy_stale(wh: Warehouse, settings: Settings) -> bool:
    """DuckDB: is the analysts' copy missing or older than the warehouse's last commit?"""
    if wh.backend.server or not settings.analyst_copy or wh.read_only:
        return False
    if not snapshot_path(settings).exists():
        return wh.meta(COMMIT_SEQ) is not None  # something was ever committed
    return wh.meta(COPY_SEQ) != wh.meta(COMMIT_SEQ)


# --- DuckDB: the read-only copy ------------------------------------------------------------------------
def snapshot_path(settings: Settings) -> Path:
    return settings.home / "analyst" / SNAPSHOT_NAME


def publish_snapshot(wh: Warehouse, settings: Settings) -> Path | None:
    """Publish the analysts' read-only copy now (DuckDB only; `inservice warehouse snapshot`)."""
    if wh.backend.server:
        return None
    return _publish_copy(wh, settings)[0]


def _publish_copy(wh: Warehouse, settings: Settings) -> tuple[Path, int, int]:
    """Bring the Parquet parts up to date (`_write_parts`), build a new catalog file (the small
    analyst tables, views over the parts) in a private folder (0700), keep a hard link to it under
    `parts/catalogs/` with the list of files it reads, and rename it over the published one. A refresh
    killed midway leaves files nobody references, removed by the next refresh. Returns the catalog,
    its tables and the rows written."""
    target = snapshot_path(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_copies(target.parent)
    parts = target.parent / PARTS
    catalogs = parts / "catalogs"
    catalogs.mkdir(parents=True, exist_ok=True)
    seq = wh.meta(COMMIT_SEQ)
    cid = f"{seq or 0}-{secrets.token_hex(4)}"
    previous = _current_manifest(target)
    walk = previous is None or (parts / BUILDING).exists()  # an earlier refresh killed: sweep its files
    _replace_text(parts / BUILDING, cid)  # a refresh killed from here on leaves files the next one sweeps
    manifest, written = _write_parts(wh, parts, previous, cid)
    work = Path(tempfile.mkdtemp(prefix=f"{_WORK}{os.getpid()}-", dir=target.parent))
    tmp = work / SNAPSHOT_NAME
    try:
        tables, rows = _build_copy(wh, tmp, seq, manifest, parts, previous)
        failpoint("analyst.before_rename")
        (catalogs / f"{cid}.json").write_text(json.dumps(manifest), encoding="utf-8")
        os.link(tmp, catalogs / f"{cid}.duckdb")  # the same file: a reader's lock on it is seen there
        os.replace(tmp, target)  # atomic: a reader sees the old catalog or the new one, never a partial file
        _replace_text(parts / CURRENT, cid)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # not commits of their own (no new commit number): the catalog now stands for `seq`
    wh.con.execute("DELETE FROM main.analyst_pending").fetchall()
    if seq is not None:
        wh.put_meta(COPY_SEQ, seq)
    collect_garbage(parts, walk or manifest["redone"])
    return target, tables, rows + written


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _current_manifest(target: Path) -> dict | None:
    """The parts the published catalog reads (its manifest), or None when they cannot be trusted (no
    catalog, a file missing): the next refresh then writes every part anew."""
    parts = target.parent / PARTS
    try:
        cid = (parts / CURRENT).read_text(encoding="utf-8").strip()
        manifest = json.loads((parts / "catalogs" / f"{cid}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not target.exists() or manifest.get("version") != MANIFEST_VERSION:
        return None
    if not all((parts / f).exists() for f in _files(manifest)):
        return None
    return manifest


def _files(manifest: dict) -> list[str]:
    return [f for t in manifest["tables"].values() for f in [t["schema"], *(f for p in t["parts"].values()
                                                                          for f in p["files"])]]


def _columns(wh: Warehouse, table: str) -> list[str]:
    return [r[0] for r in wh.con.execute("""SELECT column_name FROM duckdb_columns() WHERE database_name =
        current_database() AND schema_name = 'main' AND table_name = ? ORDER BY column_index""", [table]).fetchall()]


def _write_parts(wh: Warehouse, parts: Path, previous: dict | None, cid: str) -> tuple[dict, int]:
    """The Parquet parts of the large tables (PARTED), one per unit: only the parts of the units
    `analyst_pending` names are written again (from the old part and the rows written since the
    change), the others are kept as they are. A table seen for the first time, whose columns changed,
    or whose parts do not add up to the warehouse's row count (a write that bypassed the merge) is
    written whole. Returns the manifest and the rows written."""
    pending = wh.con.execute("""SELECT tbl, unit_code, min(since), bool_or(replaces) FROM main.analyst_pending
        GROUP BY ALL ORDER BY ALL""").fetchall()
    present = set(analyst_tables(wh))
    tables: dict[str, dict] = {}
    written, redone = 0, False
    for table, (fresh, key) in PARTED.items():
        if table not in present:
            continue
        cols = _columns(wh, table)
        old = (previous or {"tables": {}})["tables"].get(table)
        if old is None or old["columns"] != cols:
            tables[table], n = _whole_table(wh, parts, table, cols, cid)
            written += n
            continue
        entry = {"columns": cols, "schema": old["schema"], "parts": dict(old["parts"])}
        for unit, since, replaces in [(u, t, r) for tbl, u, t, r in pending if tbl == table and u is not None]:
            rel = f"{table}/unit_code={unit}/{cid}.parquet"
            part = entry["parts"].get(unit, {"files": [], "rows": 0, "high": None})
            # rows added only, all written after the part's newest: a file of those rows joins the part
            adds = not replaces and part["high"] is not None and since > datetime.fromisoformat(part["high"]) \
                and len(part["files"]) < PART_FILES
            n = _rewrite_part(wh, parts.resolve(), table, cols, unit, since, fresh, key,
                              [] if adds else part["files"], rel)
            written += n
            failpoint("analyst.copying")
            if n:
                high = wh.con.execute(f'SELECT max("{fresh}") FROM read_parquet({ddl.sql_text(str(parts / rel))})'
                                      ).fetchall()[0][0]
                if adds:
                    entry["parts"][unit] = {"files": [*part["files"], rel], "rows": part["rows"] + n,
                                            "high": max(high, datetime.fromisoformat(part["high"])).isoformat()}
                else:
                    entry["parts"][unit] = {"files": [rel], "rows": n, "high": high and high.isoformat()}
            else:
                (parts / rel).unlink(missing_ok=True)
                if not adds:
                    entry["parts"].pop(unit, None)
        held = wh.con.execute(f'SELECT count(*) FROM main."{table}"').fetchall()[0][0]
        if held != sum(p["rows"] for p in entry["parts"].values()):
            LOG.warning("analyst parts of %s did not add up to the warehouse's %d rows: written whole", table, held)
            entry, n = _whole_table(wh, parts, table, cols, cid)
            written += n
            redone = True  # the parts this refresh wrote before are read by no catalog
        tables[table] = entry
    return {"version": MANIFEST_VERSION, "catalog": cid, "tables": tables, "redone": redone}, written


def _quoted(cols: list[str], prefix: str = "") -> str:
    return ", ".join(f'{prefix}"{c}"' for c in cols)


def _whole_table(wh: Warehouse, parts: Path, table: str, cols: list[str], cid: str) -> tuple[dict, int]:
    """Every part of `table` anew (the first refresh, a changed table): one COPY partitioned by unit."""
    rel_schema = f"{table}/schema-{cid}.parquet"
    (parts / table).mkdir(parents=True, exist_ok=True)
    con = wh.con
    con.execute(f"COPY (SELECT {_quoted(cols)} FROM main.\"{table}\" LIMIT 0) "
                f"TO {ddl.sql_text(str(parts / rel_schema))} (FORMAT parquet)")
    folder = f"{table}/whole-{cid}"
    n = con.execute(f"""COPY (SELECT {_quoted(cols)} FROM main."{table}") TO {ddl.sql_text(str(parts / folder))}
        (FORMAT parquet, PARTITION_BY (unit_code), WRITE_PARTITION_COLUMNS true)""").fetchall()[0][0]
    failpoint("analyst.copying")
    fresh = PARTED[table][0]
    counts = {u: (n, high) for u, n, high in con.execute(
        f'SELECT unit_code, count(*), max("{fresh}") FROM main."{table}" GROUP BY ALL').fetchall()}
    entry: dict = {"columns": cols, "schema": rel_schema, "parts": {}}
    for unit, (rows, high) in counts.items():
        sub = parts / folder / f"unit_code={unit}"  # DuckDB's Hive folder of that unit
        files = sorted(str(f.relative_to(parts)) for f in sub.glob("*.parquet")) if unit is not None else []
        if unit is None or not files:
            raise RuntimeError(f"the parts of {table} have no folder for unit {unit!r}")
        entry["parts"][unit] = {"files": files, "rows": rows, "high": high and high.isoformat()}
    return entry, int(n)


def _rewrite_part(wh: Warehouse, parts: Path, table: str, cols: list[str], unit: str, since: datetime,
                  fresh: str, key: tuple[str, ...] | None, old: list[str], rel: str) -> int:
    """One unit's part of `table` anew: the rows written since `since` (a narrow read: `fresh` is the
    column the merge sets, so zone maps skip the row groups written before) replace the old part's
    rows of the same key, and the keys `analyst_pending` lists as deleted leave it. An append-only
    table (no key) keeps the old part's rows written before `since`. Returns the part's rows."""
    at = f"CAST({ddl.sql_text(since.isoformat())} AS TIMESTAMPTZ)"
    new = f'SELECT {_quoted(cols)} FROM main."{table}" WHERE unit_code = {ddl.sql_text(unit)} AND "{fresh}" >= {at}'
    if not old:
        kept = ""
    elif key is None:
        kept = f"""SELECT {_quoted(cols)} FROM read_parquet({_paths(parts, old)})
            WHERE NOT coalesce("{fresh}" >= {at}, false) UNION ALL """
    else:
        same = " AND ".join(f'f."{k}" = o."{k}"' for k in key)
        gone = " AND ".join(f'g."{k}" = o."{k}"' for k in key if k != "unit_code")
        kept = f"""SELECT {_quoted(cols, 'o.')} FROM read_parquet({_paths(parts, old)}) o
            WHERE NOT EXISTS (SELECT 1 FROM fresh f WHERE {same})
            AND NOT EXISTS (SELECT 1 FROM main.analyst_pending g WHERE g.tbl = {ddl.sql_text(table)}
                            AND g.unit_code = {ddl.sql_text(unit)} AND g.course_code IS NOT NULL AND {gone})
            UNION ALL """
    (parts / rel).parent.mkdir(parents=True, exist_ok=True)
    return int(wh.con.execute(f"""COPY (WITH fresh AS MATERIALIZED ({new}) {kept}SELECT * FROM fresh)
        TO {ddl.sql_text(str(parts / rel))} (FORMAT parquet)""").fetchall()[0][0])


def _paths(root: Path, files: list[str]) -> str:
    return "[" + ", ".join(ddl.sql_text(f"{root}/{f}") for f in files) + "]"


def _build_copy(wh: Warehouse, path: Path, seq: str | None, manifest: dict, parts: Path,
                previous: dict | None) -> tuple[int, int]:
    """The catalog: the small analyst tables copied, views over the Parquet parts of the large ones,
    the bridge and lights views over those, and `snapshot_info`, in one transaction. It starts from
    the published catalog when there is one: a small table whose rows are the same (count and hash,
    recorded in the manifest) is kept, the others are copied again (empty table, its comments, the
    rows). Returns the analyst tables and the rows copied."""
    con, alias = wh.con, "analyst_copy"
    keep = analyst_tables(wh)
    views = {**{v.name: v.view for v in ddl.VIEWS if v.view}, **{t.name: sql for t, sql in ddl.BRIDGE_VIEWS.items()}}
    copied = [t for t in keep if t not in manifest["tables"] and t not in views]
    prints = {t: str(con.execute(f'SELECT count(*), sum(hash(t)) FROM main."{t}" t').fetchall()[0]) for t in copied}
    manifest["prints"] = prints
    base = parts / "catalogs" / f"{previous['catalog']}.duckdb" if previous else None
    if base is not None and base.exists() and set(previous.get("prints", {})) == set(copied):  # type: ignore[union-attr]
        shutil.copyfile(base, path)  # the analysts' rows only (a catalog holds nothing else)
        redo = [t for t in copied if prints[t] != previous["prints"][t]]  # type: ignore[index]
        fresh = False
    else:
        redo, fresh = copied, True
    rows = 0
    comments = con.execute("""SELECT table_name, NULL, comment FROM duckdb_tables()
        WHERE database_name = current_database() AND schema_name = 'main' AND comment IS NOT NULL
        UNION ALL SELECT view_name, NULL, comment FROM duckdb_views()
        WHERE database_name = current_database() AND schema_name = 'main' AND comment IS NOT NULL
        UNION ALL SELECT table_name, column_name, comment FROM duckdb_columns()
        WHERE database_name = current_database() AND schema_name = 'main' AND comment IS NOT NULL""").fetchall()
    described = {*redo, *manifest["tables"], *(views if fresh else ())}
    con.execute(f"ATTACH {ddl.sql_text(str(path))} AS {alias}")
    try:
        con.begin()
        for table in redo:
            con.execute(f'DROP TABLE IF EXISTS {alias}.main."{table}"')
            con.execute(f'CREATE TABLE {alias}.main."{table}" AS SELECT * FROM main."{table}" LIMIT 0')
        root = parts.resolve()
        for table, entry in manifest["tables"].items():
            files = [entry["schema"], *(f for p in entry["parts"].values() for f in p["files"])]
            con.execute(f'CREATE OR REPLACE VIEW {alias}.main."{table}" AS SELECT {_quoted(entry["columns"])} '
                        f"FROM read_parquet({_paths(root, files)})")
        for table in keep:
            if table in views and fresh:  # over the catalog's own tables and views (the SQL names main.courses)
                con.execute(f'CREATE VIEW {alias}.main."{table}" AS {views[table]}')
        for table, column, comment in comments:
            if table in keep and table in described:
                kind = "TABLE" if table in copied else "VIEW"
                what = f'{kind} {alias}.main."{table}"' if column is None else \
                    f'COLUMN {alias}.main."{table}"."{column}"'
                con.execute(f"COMMENT ON {what} IS {ddl.sql_text(comment)}")
        for table in redo:
            rows += con.execute(f'INSERT INTO {alias}.main."{table}" SELECT * FROM main."{table}"').fetchone()[0]
            failpoint("analyst.copying")
        con.execute(f"""CREATE OR REPLACE TABLE {alias}.main.snapshot_info AS
            SELECT CAST(? AS BIGINT) AS commit_seq, now() AS refreshed_at""", [seq])
        con.execute(f"COMMENT ON TABLE {alias}.main.snapshot_info IS "
                    f"{ddl.sql_text('本副本對應之倉儲寫入序號（commit_seq）與產生時間')}")
        con.commit()
    except BaseException:
        con.rollback()
        raise
    finally:
        con.execute(f"DETACH {alias}")  # checkpoints the copy: one file, no WAL beside it
    return len(keep), rows


def collect_garbage(parts: Path, walk: bool = True) -> list[Path]:
    """Remove catalogs no reader has open (DuckDB holds a read lock on the file it opened) other than
    the current one, and the Parquet files only they read. With `walk` (a refresh was killed before it
    published, as BUILDING left behind shows; the published catalog could not be trusted), every file
    no catalog reads is found by walking the folder; otherwise only the removed catalogs' files are
    looked at. Returns what was removed."""
    catalogs = parts / "catalogs"
    try:
        current = (parts / CURRENT).read_text(encoding="utf-8").strip()
    except OSError:
        return []
    removed: list[Path] = []
    candidates: set[str] = set()
    held: set[str] = set()
    for js in catalogs.glob("*.json"):
        db = catalogs / f"{js.stem}.duckdb"
        try:
            files = _files(json.loads(js.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError):
            return removed  # a manifest that cannot be read: keep every file
        if js.stem != current and (not db.exists() or not _in_use(db)):
            db.unlink(missing_ok=True)
            js.unlink(missing_ok=True)
            removed.append(db)
            candidates.update(files)
        else:
            held.update(files)
    if walk:
        candidates = {str(f.relative_to(parts)) for f in parts.rglob("*.parquet")}
    for rel in candidates - held:
        (parts / rel).unlink(missing_ok=True)
        removed.append(parts / rel)
    folders = {d for rel in candidates - held for d in (parts / rel).parents if parts in d.parents}
    if walk:
        folders = {d for d in parts.rglob("*") if d.is_dir() and d != catalogs}
    for folder in sorted(folders, key=lambda d: len(d.parts), reverse=True):
        if folder.exists() and not any(folder.iterdir()):
            folder.rmdir()
    (parts / BUILDING).unlink(missing_ok=True)
    return removed


def _in_use(path: Path) -> bool:
    """Does a process hold DuckDB's lock on this file (a reader with it open)?"""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases our own lock
    return False


def sweep_stale_copies(folder: Path) -> list[Path]:
    """Remove what killed refreshes left in the analyst folder: private build folders, and the
    `.warehouse.duckdb.<pid>.tmp` full copies of earlier versions, whose process is gone."""
    removed = []
    for entry in folder.iterdir():
        name = entry.name
        if name.startswith(_WORK):
            pid = name[len(_WORK):].split("-", 1)[0]
        elif name.startswith(f".{SNAPSHOT_NAME}.") and name.endswith(".tmp"):
            pid = name[len(SNAPSHOT_NAME) + 2:-4]
        else:
            continue
        if pid.isdigit() and _alive(int(pid)) and int(pid) != os.getpid():
            continue  # another process is building one now
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- PostgreSQL: the read-only role --------------------------------------------------------------------
def grant_analyst_role(wh: Warehouse, role: str = ANALYST_ROLE, password: str | None = None) -> list[str]:
    """Create (if needed) a role that can read the analyst tables and nothing else; returns the tables.

    One transaction: an analyst already connected never sees the role half-configured. The grants
    of publication tables created later are added after each committed write (refresh_after_commit)."""
    if not wh.backend.server:
        raise ValueError("the analyst role is for a PostgreSQL warehouse (DuckDB publishes a read-only copy)")
    con, db = wh.con, _current_db(wh)
    with wh.transaction():
        if not con.execute("SELECT 1 FROM pg_roles WHERE rolname = ?", [role]).fetchall():
            con.execute(f'CREATE ROLE "{role}" LOGIN NOINHERIT')
        if password is not None:
            con.execute(f'ALTER ROLE "{role}" PASSWORD ?', [password])
        con.execute(f'ALTER ROLE "{role}" SET default_transaction_read_only = on')
        con.execute(f'ALTER ROLE "{role}" SET search_path = main')
        con.execute(f'REVOKE ALL ON ALL TABLES IN SCHEMA main, testing FROM "{role}"')
        con.execute(f'REVOKE CREATE ON SCHEMA main, testing, public FROM "{role}"')
        # no staging of its own: temp tables only for the loader
        con.execute(f"REVOKE TEMPORARY ON DATABASE {db} FROM PUBLIC")
        con.execute(f'REVOKE TEMPORARY ON DATABASE {db} FROM "{role}"')
        con.execute(f"GRANT TEMPORARY ON DATABASE {db} TO CURRENT_USER")
        # no lock a load waits for (pg_advisory_lock…); a forgotten open transaction ends by itself
        revoke_blocking_functions(con, role)  # type: ignore[arg-type]  # PostgreSQL: a PgConnection
        con.execute(f'ALTER ROLE "{role}" SET idle_in_transaction_session_timeout = \'10min\'')
        con.execute(f'GRANT USAGE ON SCHEMA main TO "{role}"')
        return _grant_select(wh, role)


def _grant_select(wh: Warehouse, role: str) -> list[str]:
    tables = analyst_tables(wh)
    wh.con.execute(f'GRANT SELECT ON {", ".join(f"main.{t}" for t in tables)} TO "{role}"')
    return tables


def _current_db(wh: Warehouse) -> str:
    return '"' + wh.con.execute("SELECT current_database()").fetchone()[0] + '"'


# --- the lake ------------------------------------------------------------------------------------------
def batches(wh: Warehouse, sql: str, rows: int = 200_000) -> Iterator[pa.RecordBatch]:
    if wh.backend.server:
        yield from wh.con.stream(sql, rows=rows)  # type: ignore[attr-defined]
        return
    yield from wh.con.execute(sql).to_arrow_reader(rows)  # type: ignore[attr-defined]


def _with_year_month(batch: pa.RecordBatch) -> pa.RecordBatch:
    """uploads/findings: the `ym` text (YYYY-MM) as the two partition columns."""
    ym = batch.column("ym")
    year = pc.cast(pc.utf8_slice_codeunits(ym, 0, 4), pa.int32())
    month = pc.cast(pc.utf8_slice_codeunits(ym, 5, 7), pa.int32())
    names = [n for n in batch.schema.names if n != "ym"]
    return pa.RecordBatch.from_arrays([*(batch.column(n) for n in names), year, month], [*names, "year", "month"])


def export_lake(wh: Warehouse, dest: Path) -> dict[str, int]:
    """Write the analyst tables under `dest/<table>/year=YYYY/month=M/*.parquet` (units: one file).

    Each table's folder is replaced whole (written beside, then renamed), so a reader of the lake
    never sees a table half-written. Returns rows written per table."""
    dest.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    for table, template in LAKE_QUERIES.items():
        sql = template.format(ym=f"coalesce(u.data_month, {month_text(wh.con, 'u.received_at')})")
        stream = batches(wh, sql)
        if table in ("uploads", "findings"):
            stream = (_with_year_month(b) for b in stream)
        first = next(stream, None)
        staging = dest / f".{table}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        count = 0
        if first is not None:
            def counted(b: pa.RecordBatch) -> pa.RecordBatch:
                nonlocal count
                count += b.num_rows
                return b

            data = (counted(b) for b in _chain(first, stream))
            partitioning = (None if table in UNPARTITIONED else
                            ds.partitioning(PLAN_PARTITION if table in PLAN_LAKE else PARTITION, flavor="hive"))
            ds.write_dataset(data, staging, schema=first.schema, format="parquet", partitioning=partitioning,
                             basename_template="part-{i}.parquet", max_rows_per_group=500_000)
        else:
            staging.mkdir(parents=True)
        final = dest / table
        old = dest / f".{table}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        written[table] = count
    return written


def _chain(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield first
    yield from rest


# --- the lake's table definitions for Spark and Trino ----------------------------------------------------
SPARK_TYPES = {"VARCHAR": "STRING", "TIMESTAMP": "TIMESTAMP_NTZ", "TIMESTAMPTZ": "TIMESTAMP", "INTEGER": "INT"}
# Trino's Hive connector has no timestamp with time zone: UTC-adjusted Parquet timestamps are read as
# timestamps in hive.parquet.time-zone (set it to UTC, or Asia/Taipei for local wall time).
TRINO_TYPES = {"VARCHAR": "varchar", "TIMESTAMP": "timestamp(6)", "TIMESTAMPTZ": "timestamp(6)",
               "INTEGER": "integer", "BIGINT": "bigint", "BOOLEAN": "boolean", "DATE": "date"}
LAKE_DECLARED = {name: BRIDGES.get(name) or ddl.table(name) for name in LAKE_QUERIES}
assert all(t.analysts for n, t in LAKE_DECLARED.items() if n not in BRIDGES), "the lake holds analyst tables only"

# The cold archive of `inservice backfill` (sealed Parquet beside the warehouse, `<table>/year=YYYY/`):
# courses and attendance with the warehouse's declared columns and types, less what a load adds.
ARCHIVE_TABLES = {"courses": ddl.COURSES, "attendance": ddl.ATTENDANCE}
ARCHIVE_PARTITION = pa.schema([("year", pa.int32())])
_LOAD_COLUMNS = {"upload_id", "loaded_at", "first_loaded_at"}
ARROW_TYPES = {"VARCHAR": pa.string(), "DATE": pa.date32(), "TIMESTAMP": pa.timestamp("us"),
               "DECIMAL(5,1)": pa.decimal128(5, 1), "BOOLEAN": pa.bool_(), "INTEGER": pa.int32(), "BIGINT": pa.int64()}


def archive_columns(name: str) -> list[ddl.Column]:
    return [c for c in ARCHIVE_TABLES[name].columns if c.name not in _LOAD_COLUMNS]


def archive_schema(name: str) -> pa.Schema:
    """The Arrow schema an archive file of `name` holds (the partition `year` is its folder)."""
    return pa.schema([(c.name, ARROW_TYPES[c.type]) for c in archive_columns(name)])


def lake_ddl(engine: str, location: str, schema: str = "inservice") -> str:
    """CREATE SCHEMA and CREATE TABLE statements over the lake for Spark SQL or Trino (Hive connector),
    from the declared columns, so they cannot drift from what `export_lake` writes. Statements end
    with `;` and a newline. Running them again after the lake is rewritten brings the catalog to it
    (partitions added and dropped, files listed anew)."""
    tables = []
    for name, table in LAKE_DECLARED.items():
        keys = [] if name in UNPARTITIONED else [f.name for f in (PLAN_PARTITION if name in PLAN_LAKE else PARTITION)]
        tables.append((name, table.comment, [c for c in table.columns if c.name not in keys], keys))
    return _definitions(engine, location, schema, tables)


def archive_ddl(engine: str, location: str, schema: str = "inservice_archive") -> str:
    """The same for a sealed cold archive of `inservice backfill` (its folder as `location`)."""
    tables = [(name, f"冷封存：{t.comment}", archive_columns(name), ["year"]) for name, t in ARCHIVE_TABLES.items()]
    return _definitions(engine, location, schema, tables)


def _definitions(engine: str, location: str, schema: str,
                 tables: list[tuple[str, str, list[ddl.Column], list[str]]]) -> str:
    if engine not in ("spark", "trino"):
        raise ValueError("engine must be spark or trino")
    # a schema the tables go in: without it Spark refuses the first CREATE TABLE (SCHEMA_NOT_FOUND)
    out = [f"CREATE SCHEMA IF NOT EXISTS {schema};\n" if engine == "spark"
           else f"CREATE SCHEMA IF NOT EXISTS hive.{schema};\n"]
    for name, comment, columns, keys in tables:
        where = f"{location.rstrip('/')}/{name}"
        if engine == "spark":
            cols = [f"  `{c.name}` {SPARK_TYPES.get(c.type, c.type)} COMMENT {_spark_text(c.comment)}"
                    for c in columns]
            cols += [f"  `{k}` INT" for k in keys]
            part = f"\nPARTITIONED BY ({', '.join(keys)})" if keys else ""
            out.append(f"CREATE TABLE IF NOT EXISTS {schema}.{name} (\n" + ",\n".join(cols)
                       + f"\n) USING PARQUET{part}\nCOMMENT {_spark_text(comment)}\nLOCATION '{where}';\n"
                       # run again after each `inservice warehouse lake`: partitions gone are dropped, files re-listed
                       + (f"MSCK REPAIR TABLE {schema}.{name} SYNC PARTITIONS;\n" if keys
                          else f"REFRESH TABLE {schema}.{name};\n"))
        else:
            cols = [f'  "{c.name}" {TRINO_TYPES.get(c.type, c.type.lower())} COMMENT {ddl.sql_text(c.comment)}'
                    for c in columns]
            cols += [f"  {k} integer" for k in keys]
            props = [f"external_location = '{where}'", "format = 'PARQUET'"]
            props += [f"partitioned_by = ARRAY[{', '.join(repr(k) for k in keys)}]"] if keys else []
            out.append(f"CREATE TABLE IF NOT EXISTS hive.{schema}.{name} (\n" + ",\n".join(cols)
                       + f"\n)\nCOMMENT {ddl.sql_text(comment)}\nWITH (\n  " + ",\n  ".join(props) + "\n);\n"
                       + (f"CALL hive.system.sync_partition_metadata('{schema}', '{name}', 'FULL');\n"
                          if keys else ""))
    return "\n".join(out)


def _spark_text(text: str) -> str:
    """A Spark SQL string literal (backslash escapes; Spark reads '' as two adjacent literals)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
