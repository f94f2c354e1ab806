"""The MOE school list as a dated register (`school_register`, changes in `school_changes`).

The register starts as the list shipped with the project (schemas/data/schools.csv, valid from the
beginning). `inservice schools import FILE... --date D --letter L` compares the lists MOE publishes
(CSV or .xlsx: code, name, county, level; one list per level is fine) with the register as it stands
and records, effective on D: openings (a code not in the register), re-openings, renames, level
changes (改制), county changes and closures (a school of a level the files cover that is no longer
listed). Each change closes the school's current version (valid_to = D) and opens a new one
(valid_from = D), so:
- W04 judges an attendance row's school against the register on its course's start date;
- the statistics take a teacher's county and level from the version in force on the course's start
  date, and a past month re-published after a change gives the figures of its time.

The whole import is one transaction; a file with a bad row (unknown county or level, a malformed or
repeated code) is refused whole, naming file, row, field and value.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa

from inservice.config import TAIPEI
from inservice.schemas import codelists
from inservice.schemas.codelists import fold_key
from inservice.warehouse.backend import Connection
from inservice.warehouse.store import Warehouse, WarehouseError, actor

SCHOOL_CODE = re.compile(r"^[0-9A-Z]{6}$")  # spec §2.2 school_code
SCHOOL_LEVELS = tuple(c.code for c in codelists.LEVELS if c.code != "A")  # A 不限 is no school's level
# A school version in force on day {d} (an SQL expression; the register aliased `s`).
VALID_ON = "(s.valid_from IS NULL OR s.valid_from <= {d}) AND (s.valid_to IS NULL OR s.valid_to > {d})"

# Header (folded) → field. MOE's lists name the columns in several ways.
HEADERS = {
    "code": ("代碼", "學校代碼", "校代碼", "SCHOOL_CODE", "CODE"),
    "name": ("學校名稱", "名稱", "校名", "SCHOOL_NAME", "NAME"),
    "county": ("縣市", "縣市名稱", "縣市別", "縣市代碼", "COUNTY", "COUNTY_CODE"),
    "level": ("等級", "學制", "教育階段", "學校類別", "LEVEL"),
    "ownership": ("公/私立", "公私立", "公私立別", "OWNERSHIP"),
}
# Level words in MOE lists beyond the code list's own labels.
LEVEL_WORDS = {"國民小學": "E", "國民中學": "J", "高級中學": "S", "高級中等學校": "S", "普通型高級中等學校": "S",
               "高級職業學校": "V", "技術型高級中等學校": "V", "幼稚園": "K", "特教學校": "X"}


@dataclass(frozen=True)
class SchoolRow:
    school_code: str
    school_name: str
    county_code: str
    level: str
    ownership: str | None


@dataclass
class ImportResult:
    effective: date
    letter: str
    files: list[str]
    levels: list[str]
    rows: int
    changes: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"effective_date": self.effective.isoformat(), "letter_no": self.letter, "files": self.files,
                "levels": self.levels, "rows": self.rows, "changes": self.changes}


def _table_rows(path: Path) -> list[list[str]]:
    ext = path.suffix.lower()
    if ext == ".csv":
        raw = path.read_bytes()
        for enc in ("utf-8-sig", "cp950"):  # MOE's CSVs come in UTF-8 (with BOM) or Big5
            try:
                text = raw.decode(enc)
                break
            except UnicodeDecodeError:
                continue
        else:
            raise WarehouseError(f"{path.name}: not UTF-8 or Big5 text")
        return [[c.strip() for c in r] for r in csv.reader(text.splitlines())]
    if ext in (".xlsx", ".xls"):  # staff's own file, a few thousand rows: read in-process
        import fastexcel

        try:
            sheet = fastexcel.read_excel(str(path)).load_sheet(0, header_row=None, skip_rows=0, dtypes="string")
        except Exception as exc:  # fastexcel's errors are its own classes
            raise WarehouseError(f"{path.name}: not a readable workbook ({type(exc).__name__})") from exc
        columns = [c.to_pylist() for c in pa.Table.from_batches([sheet.to_arrow()]).columns]
        return [[("" if v is None else str(v).strip()) for v in row] for row in zip(*columns, strict=True)]
    raise WarehouseError(f"{path.name}: give a .csv, .xlsx or .xls file")


def _county(value: str) -> str | None:
    value = re.sub(r"^\s*[\[［(（]\s*\w+\s*[\]］)）]\s*", "", value)  # MOE writes "[63]臺北市"
    return codelists.lookup("county").get(fold_key(value))


def _level(value: str) -> str | None:
    key = fold_key(value)
    code = codelists.lookup("level").get(key) or LEVEL_WORDS.get(value.strip())
    return code if code in SCHOOL_LEVELS else None


def read_list(path: Path, level: str | None = None) -> list[SchoolRow]:
    """One MOE list; `level` for a list without a level column (MOE publishes one list per level)."""
    rows = [r for r in _table_rows(path) if any(r)]
    if not rows:
        raise WarehouseError(f"{path.name}: empty")
    header = [fold_key(h) for h in rows[0]]
    where: dict[str, int] = {}
    for name, words in HEADERS.items():
        for i, h in enumerate(header):
            if h in {fold_key(w) for w in words}:
                where[name] = i
                break
    missing = [n for n in ("code", "name", "county") if n not in where]
    if "level" not in where and level is None:
        missing.append("level (or give --level)")
    if missing:
        raise WarehouseError(f"{path.name}: column(s) missing: {', '.join(missing)} "
                             f"(headers found: {', '.join(rows[0])})")
    out: list = []
    seen: dict = {}
    problems: list = []
    for n, r in enumerate(rows[1:], start=2):
        def cell(name: str, r: list[str] = r) -> str:
            i = where.get(name)
            return r[i] if i is not None and i < len(r) else ""
        code = fold_key(cell("code"))
        county = _county(cell("county"))
        lv = _level(cell("level")) if "level" in where else level
        if not SCHOOL_CODE.match(code):
            problems.append(f"row {n}, code: {cell('code')!r} is not a 6-character school code")
        elif code in seen:
            problems.append(f"row {n}, code: {code} repeats row {seen[code]}")
        if not cell("name"):
            problems.append(f"row {n}, name: empty")
        if county is None:
            problems.append(f"row {n}, county: {cell('county')!r} is not a county (spec §3.1)")
        if lv is None:
            problems.append(f"row {n}, level: {cell('level')!r} is not a school level (K E J S V X)")
        seen.setdefault(code, n)
        out.append(SchoolRow(code, cell("name"), county or "", lv or "", cell("ownership") or None))
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise WarehouseError(f"{path.name}: nothing imported: " + "; ".join(problems[:10]) + more)
    return out


def import_lists(wh: Warehouse, paths: list[Path], effective: date, letter: str | None, level: str | None = None,
                 closures: bool = True, by: str | None = None, now: datetime | None = None) -> ImportResult:
    """Record what changed between the register and the lists (taken together), effective `effective`."""
    if not letter or not letter.strip():
        raise WarehouseError("a school list import needs the letter or the list's publication number (--letter)")
    letter = letter.strip()
    if level is not None and level not in SCHOOL_LEVELS:
        raise WarehouseError(f"--level must be one of {SCHOOL_LEVELS}")
    rows: dict[str, SchoolRow] = {}
    for p in paths:
        for r in read_list(p, level):
            if r.school_code in rows:
                raise WarehouseError(f"{p.name}: school {r.school_code} is in two of the files")
            rows[r.school_code] = r
    levels = sorted({r.level for r in rows.values()})
    now = now or datetime.now(TAIPEI)
    by = by or actor()
    result = ImportResult(effective, letter, [p.name for p in paths], levels, len(rows))
    names = ", ".join(p.name for p in paths)
    with wh.transaction():
        current = {r[0]: r for r in wh.con.execute("""SELECT school_code, school_name, county_code, level, ownership,
            valid_from FROM school_register WHERE valid_to IS NULL""").fetchall()}
        ever = {r[0] for r in wh.con.execute("SELECT DISTINCT school_code FROM school_register").fetchall()}
        log: list[tuple] = []
        new_versions: list[SchoolRow] = []
        closed: list[str] = []

        def note(code: str, change: str, old: str | None, new: str | None) -> None:
            log.append((code, change, old, new, effective, letter, names, by, now))
            result.changes[change] = result.changes.get(change, 0) + 1

        for code, r in rows.items():
            cur = current.get(code)
            if cur is None:
                note(code, "reopen" if code in ever else "open", None, f"{r.school_name} {r.county_code} {r.level}")
                new_versions.append(r)
                continue
            diffs = [(c, old, new) for c, old, new in (("rename", cur[1], r.school_name),
                                                       ("county", cur[2], r.county_code), ("level", cur[3], r.level))
                     if old != new]
            owner_changed = r.ownership is not None and r.ownership != cur[4]
            if not diffs and not owner_changed:
                continue
            if cur[5] is not None and effective <= cur[5]:
                raise WarehouseError(f"school {code}: its last change took effect on {cur[5]}; this list's date "
                                     f"({effective}) must be later")
            for c, old, new in diffs:
                note(code, c, old, new)
            if owner_changed and not diffs:
                note(code, "ownership", cur[4], r.ownership)
            closed.append(code)
            new_versions.append(r if r.ownership is not None else replace(r, ownership=cur[4]))
        if closures:
            for code, cur in current.items():
                if code not in rows and cur[3] in levels:
                    if cur[5] is not None and effective <= cur[5]:
                        raise WarehouseError(f"school {code}: its last change took effect on {cur[5]}; this list's "
                                             f"date ({effective}) must be later")
                    note(code, "close", f"{cur[1]} {cur[2]} {cur[3]}", None)
                    closed.append(code)
        if closed:
            wh.con.register("closed_codes", pa.table({"school_code": pa.array(closed, pa.string())}))
            try:
                wh.con.execute("""UPDATE school_register SET valid_to = ? WHERE valid_to IS NULL
                    AND school_code IN (SELECT school_code FROM closed_codes)""", [effective])
            finally:
                wh.con.unregister("closed_codes")
        if new_versions:
            n = len(new_versions)
            wh.con.register("new_schools", pa.table({
                "school_code": [r.school_code for r in new_versions],
                "school_name": [r.school_name for r in new_versions],
                "county_code": [r.county_code for r in new_versions], "level": [r.level for r in new_versions],
                "ownership": pa.array([r.ownership for r in new_versions], pa.string()),
                "valid_from": pa.array([effective] * n, pa.date32()), "valid_to": pa.nulls(n, pa.date32())}))
            try:
                wh.con.execute("INSERT INTO school_register SELECT * FROM new_schools")
            finally:
                wh.con.unregister("new_schools")
        if log:
            cols = list(zip(*log, strict=True))
            wh.con.register("new_changes", pa.table({
                "school_code": pa.array(cols[0], pa.string()), "change": pa.array(cols[1], pa.string()),
                "old_value": pa.array(cols[2], pa.string()), "new_value": pa.array(cols[3], pa.string()),
                "effective_date": pa.array(cols[4], pa.date32()), "letter_no": pa.array(cols[5], pa.string()),
                "source_file": pa.array(cols[6], pa.string()), "changed_by": pa.array(cols[7], pa.string()),
                "changed_at": pa.array(cols[8], pa.timestamp("us", tz="UTC"))}))
            try:
                wh.con.execute("INSERT INTO school_changes SELECT * FROM new_changes")
            finally:
                wh.con.unregister("new_changes")
    return result


def school_on(con: Connection, code: str, day: date) -> dict | None:
    """The school's version in force on `day` (None: not in the register that day)."""
    cur = con.execute(f"""SELECT school_code, school_name, county_code, level, ownership, valid_from, valid_to
        FROM school_register s WHERE school_code = ? AND {VALID_ON.format(d='CAST(? AS DATE)')}""", [code, day, day])
    names = [d[0] for d in cur.description]
    rows = cur.fetchall()
    return dict(zip(names, rows[0], strict=True)) if rows else None


def changes(con: Connection, code: str | None = None) -> list[dict]:
    cur = con.execute("""SELECT * FROM school_changes WHERE ? IS NULL OR school_code = ?
        ORDER BY effective_date, school_code, change""", [code, code])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
