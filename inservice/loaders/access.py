"""Access (.mdb Access 97–2003, .accdb Access 2007+) through Debian's mdbtools (`apt-get install mdbtools`).

Every mdbtools call is a child process (under util-linux `prlimit`) with a time limit (`TIMEOUT_S`),
an address-space limit (`MEMORY_LIMIT_BYTES`), a cap on what it may write (`OUTPUT_LIMIT_BYTES`; its
output goes to a temporary file), no core dumps and a minimal environment: a damaged file can make
mdbtools loop, crash or print part of a table and exit 0 (tests/fixtures/access/edge/README.md), so
a read counts only when

- the file starts with an Access header and its size is a whole number of pages (2 KiB Jet 3,
  4 KiB Jet 4/ACE, from the version byte at 0x14),
- every call exits 0 within its time, and prints nothing on stderr but mdbtools' "unsupported data
  type" warning (and then never for a column we read: its type is checked first),
- `mdb-export` yields exactly as many rows as `mdb-count` says the table holds.

Anything else is refused as F01 with the reason. Values are rendered as in base.py: dates
`YYYY-MM-DD` (`YYYY-MM-DD HH:MM:SS` when the time is not midnight), yes/no `true`/`false`, numbers
as plain decimal text; `_row` is the record's position in the table in stored order.

What mdbtools 1.0 cannot tell us, and what happens then:

- Dates outside 1899-12-30 … 4637 come out as `1900-01-00 00:00:00`; characters outside the basic
  plane as `??` (in Jet 3 files, bytes the code page cannot map as `?`). Such a cell becomes
  `LOST` (U+FFFD) and `RawUpload.notes` gets a C02/A02 error for its row and field saying the reader
  cannot represent the value faithfully, so the row is rejected, never loaded wrong. A `?` is
  accepted as typed only when the value, encoded as Access stores it, occurs in the file's bytes.
- An empty string and NULL both come out as nothing (mdbtools reads a zero-length text as NULL,
  whatever the quoting): both become null here. The rules treat them alike (blank = missing, §2.3).

Configuration (environment):

- `INSERVICE_ACCESS_JET3_CHARSET`: the charset of text in Jet 3 (Access 97) files, handed to mdbtools
  as `MDB_JET3_CHARSET`, overriding the code page the file's header names. Default `CP950` (Big5,
  spec §2.4), which also reads files whose header wrongly says another code page (e.g. 1252).
  Set it (e.g. `BIG5-HKSCS`) for files in another charset; it must be a name both iconv and Python
  know. Blank means the default: mdbtools is never given an empty charset.
"""

from __future__ import annotations

import codecs
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from inservice.loaders.base import (
    NOT_ACCESS,
    RawUpload,
    UploadRefused,
    canonical_table,
    extra_columns_note,
    fold_header,
    match_headers,
    unreadable,
)
from inservice.schemas.fields import RECORD_TYPES, RecordType
from inservice.schemas.rules import RULES
from inservice.schemas.text import fold  # the engine's course_code of a row, folded as the rules fold it

JET3_CHARSET_ENV = "INSERVICE_ACCESS_JET3_CHARSET"
DEFAULT_JET3_CHARSET = "CP950"
TIMEOUT_S = 60.0
MEMORY_LIMIT_BYTES = 1 << 30
OUTPUT_LIMIT_BYTES = 2 << 30
DATE_FORMAT = "%Y-%m-%d"
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
LOST = "\ufffd"  # a cell the reader could not represent: unparseable for every typed field

_MAGICS = (b"Standard Jet DB\x00", b"Standard ACE DB\x00")
_ALLOWED_STDERR = re.compile(r"^Warning: mdb_col_to_string called on unsupported data type \d+\.$")
# Access types mdb-export renders as text we can trust (mdb-schema's names for them)
_READABLE_TYPES = frozenset({"Boolean", "Byte", "Integer", "Long Integer", "Currency", "Single", "Double",
                             "DateTime", "Text", "Memo/Hyperlink", "Numeric", "Replication ID"})
_TEXT_TYPES = frozenset({"Text", "Memo/Hyperlink"})
_NUMBER_TYPES = frozenset({"Byte", "Integer", "Long Integer", "Currency", "Single", "Double", "Numeric"})
_SCHEMA_TABLE = re.compile(r"^CREATE TABLE \[(?P<name>[^\]]*)\]\s*$")
_SCHEMA_COLUMN = re.compile(r"^\t\[(?P<name>[^\]]*)\]\t+(?P<type>[^,(\t]+?)\s*(?:\([^)]*\))?\s*,?\s*$")
_BAD_DATE = "1900-01-00"  # what mdbtools prints for a date it cannot convert


@dataclass(frozen=True)
class AccessFile:
    path: Path
    version: int  # header byte 0x14: 0 Jet 3, 1 Jet 4, 2+ ACE
    page_size: int
    jet3_charset: str | None  # the charset Jet 3 text is decoded with; None for Jet 4/ACE

    @property
    def jet3(self) -> bool:
        return self.version == 0


@dataclass
class ExportedTable:
    """One Access table as read: a string column per Access column, plus the cells the reader could
    not represent faithfully (`lost[column]` a boolean mask, `why[column]` its reason key)."""

    name: str
    types: dict[str, str]  # column → Access type as mdb-schema names it ("Text", "DateTime", ...)
    data: pa.Table
    lost: dict[str, pa.Array] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)  # "date" | "char"


def _refuse(zh: str, en: str) -> UploadRefused:
    return UploadRefused("F01", zh, en)


def jet3_charset() -> str:
    """The configured Jet 3 charset; a bad setting is the operator's error, not the sender's."""
    name = os.environ.get(JET3_CHARSET_ENV, "").strip() or DEFAULT_JET3_CHARSET
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]*", name):
        raise ValueError(f"{JET3_CHARSET_ENV}={name!r} is not a charset name")
    try:
        codecs.lookup(name)  # the '?' check encodes values back with it
    except LookupError as exc:
        raise ValueError(f"{JET3_CHARSET_ENV}={name!r}: Python does not know this charset") from exc
    return name


def inspect_file(path: Path) -> AccessFile:
    """Header and size checks made before any child process touches the file."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(0x20)
    except OSError as exc:
        raise unreadable(NOT_ACCESS, exc, path.name) from exc
    if size == 0:
        raise _refuse("檔案是空的（0 位元組）", "the file is empty (0 bytes)")
    if len(head) < 0x15 or head[:4] != b"\x00\x01\x00\x00" or head[4:20] not in _MAGICS:
        hint_zh, hint_en = "", ""
        if head.startswith(b"PK\x03\x04"):
            hint_zh = "（看來是 ZIP 檔，例如改了副檔名的 .xlsx）"
            hint_en = " (it looks like a ZIP, e.g. a renamed .xlsx)"
        elif head.startswith(b"\xd0\xcf\x11\xe0"):
            hint_zh = "（看來是舊版 Office 檔，例如改了副檔名的 .xls）"
            hint_en = " (it looks like an old Office file, e.g. a renamed .xls)"
        raise _refuse(f"不是 Access 資料庫{hint_zh}", f"not an Access database{hint_en}")
    version = head[0x14]
    page = 2048 if version == 0 else 4096
    if size < 3 * page:  # header, free-space map and the catalog's definition at least
        raise _refuse(f"檔案只有 {size:,} 位元組，不足以構成 Access 資料庫：檔案不完整或已損毀",
                      f"the file has only {size:,} bytes, too few for an Access database: "
                      "it is cut short or damaged")
    if size % page:
        raise _refuse(f"檔案大小 {size:,} 位元組不是 {page:,} 位元組頁面的整數倍：檔案不完整或已損毀",
                      f"the file size {size:,} bytes is not a whole number of {page:,}-byte pages: "
                      "the file is cut short or damaged")
    return AccessFile(path, version, page, jet3_charset() if version == 0 else None)


# --- child processes ---------------------------------------------------------------------------

def _limited(args: list[str]) -> list[str]:
    """The call under prlimit (util-linux), which sets the limits and execs the tool: no Python runs
    between fork and exec (preexec_fn is unsafe in a threaded process such as Dagster's, and
    forces a real fork of this large interpreter: measured 15 ms a call against 4 ms)."""
    cpu = int(TIMEOUT_S) + 5  # a backstop should this process die and leave the child behind
    return ["prlimit", f"--as={MEMORY_LIMIT_BYTES}", f"--fsize={OUTPUT_LIMIT_BYTES}", "--core=0",
            f"--cpu={cpu}", "--", *args]


def _wait(proc: subprocess.Popen, timeout: float) -> int:
    """Popen.wait(timeout) polls with sleeps of up to 50 ms, most of a small file's read time; a
    pidfd (Linux ≥ 5.3) wakes us the moment the child ends."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return proc.wait(timeout=timeout)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(timeout * 1000):
            raise subprocess.TimeoutExpired(proc.args, timeout)
    finally:
        os.close(fd)
    return proc.wait()


def _child_env(f: AccessFile) -> dict[str, str]:
    # a minimal environment: no MDBOPTS/MDBICONV from the caller; C locale keeps '.' in numbers
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
    if f.jet3 and f.jet3_charset:
        env["MDB_JET3_CHARSET"] = f.jet3_charset
    return env


@dataclass
class _Call:
    zh: str  # what is being read, for messages
    en: str
    proc: subprocess.Popen
    out: Path
    err: Path
    started: float


class _Runner:
    """Starts mdbtools calls side by side (no threads: output goes to files) and collects them."""

    TOOLS = ("prlimit", "mdb-tables", "mdb-schema", "mdb-export", "mdb-count")

    def __init__(self, f: AccessFile, workdir: Path) -> None:
        missing = [t for t in self.TOOLS if shutil.which(t) is None]
        if missing:  # the deployment's fault, not the sender's: no receipt should blame the file
            raise RuntimeError(f"{', '.join(missing)} not found: install Debian's mdbtools (and util-linux)")
        self.f = f
        self.workdir = workdir
        self.env = _child_env(f)
        self.calls: list[_Call] = []

    def start(self, what: tuple[str, str], *args: str) -> _Call:
        n = len(self.calls)
        out, err = self.workdir / f"{n}.out", self.workdir / f"{n}.err"
        try:
            with out.open("wb") as fo, err.open("wb") as fe:
                proc = subprocess.Popen(_limited(list(args)), stdin=subprocess.DEVNULL, stdout=fo,
                                        stderr=fe, env=self.env, close_fds=True)
        except FileNotFoundError as exc:
            raise RuntimeError("prlimit not found: install Debian's util-linux") from exc
        call = _Call(*what, proc, out, err, time.monotonic())
        self.calls.append(call)
        return call

    def finish(self, call: _Call) -> Path:
        """Wait for the call; its stdout file if it ran cleanly, else F01."""
        left = max(0.0, call.started + TIMEOUT_S - time.monotonic())
        try:
            rc = _wait(call.proc, left)
        except subprocess.TimeoutExpired:
            call.proc.kill()
            call.proc.wait()
            raise _refuse(f"讀取{call.zh}逾時（{TIMEOUT_S:g} 秒）",
                          f"reading {call.en} timed out ({TIMEOUT_S:g} s)") from None
        errors = [ln for ln in call.err.read_bytes().decode("utf-8", "replace").splitlines()
                  if ln.strip() and not _ALLOWED_STDERR.match(ln.strip())]
        if rc != 0 or errors:
            how = f"exit status {rc}" if rc >= 0 else f"killed by signal {-rc}"
            said = "; ".join(errors[:3])[:300]  # mdbtools' words (they may name the server's path): the log's
            raise unreadable((f"無法讀取{call.zh}（檔案可能損毀或未完整上傳），請重新匯出後再傳",
                              f"{call.en} cannot be read (the file may be damaged or incompletely uploaded); "
                              "export it again and resend"), f"{how}: {said}", self.f.path.name)
        return call.out

    def close(self) -> None:
        for call in self.calls:  # on any way out, no child is left running
            if call.proc.poll() is None:
                call.proc.kill()
                call.proc.wait()


# --- tables ------------------------------------------------------------------------------------

def _list_tables(runner: _Runner) -> list[str]:
    call = runner.start(("資料表清單", "the table list"), "mdb-tables", "-1", str(runner.f.path))
    out = runner.finish(call)
    return [t for t in out.read_bytes().decode("utf-8").split("\n") if t.strip()]


def _parse_schema(text: str, table: str) -> dict[str, str]:
    """mdb-schema's CREATE TABLE → {column: Access type}, in column order."""
    columns: dict[str, str] = {}
    tables = 0
    for line in text.splitlines():
        if _SCHEMA_TABLE.match(line):
            tables += 1
            continue
        m = _SCHEMA_COLUMN.match(line)
        if m and tables == 1:
            columns[m["name"]] = m["type"].strip()
    if tables != 1 or not columns:
        raise _refuse(f"無法讀取資料表「{table}」的欄位定義",
                      f"cannot read the column definitions of table '{table}'")
    return columns


@dataclass
class _Pending:
    table: str
    schema: _Call
    export: _Call
    count: _Call


def _start_table(runner: _Runner, table: str) -> _Pending:
    path = str(runner.f.path)
    zh, en = f"資料表「{table}」", f"table '{table}'"
    return _Pending(
        table,
        runner.start((f"{zh}的欄位定義", f"the columns of {en}"), "mdb-schema", "-T", table,
                     "--no-drop-table", "--no-not-null", "--no-default-values", "--no-not_empty",
                     "--no-comments", "--no-indexes", "--no-relations", path),
        # -b hex: OLE/binary columns (never ours) as hex, so they cannot break the CSV
        runner.start((zh, en), "mdb-export", "-H", "-b", "hex", "-D", DATE_FORMAT, "-T", DATETIME_FORMAT,
                     path, table),
        runner.start((f"{zh}的筆數", f"the row count of {en}"), "mdb-count", path, table),
    )


def _finish_table(runner: _Runner, p: _Pending) -> ExportedTable:
    types = _parse_schema(runner.finish(p.schema).read_bytes().decode("utf-8"), p.table)
    csv_path = runner.finish(p.export)
    count_text = runner.finish(p.count).read_bytes().decode("utf-8", "replace").strip()
    if not count_text.isdigit():
        raise _refuse(f"無法取得資料表「{p.table}」的筆數", f"cannot count the rows of table '{p.table}'")
    names = list(types)
    if csv_path.stat().st_size == 0:
        data = pa.table({n: pa.array([], pa.string()) for n in names})
    else:
        try:
            data = pacsv.read_csv(
                csv_path,
                read_options=pacsv.ReadOptions(column_names=names, use_threads=True),
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                # all strings; only an unquoted empty field is null (mdb-export quotes real text)
                convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                     null_values=[""], strings_can_be_null=True,
                                                     quoted_strings_can_be_null=False),
            )
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise unreadable((f"資料表「{p.table}」的內容無法解析（檔案可能損毀），請重新匯出後再傳",
                              f"the rows of table '{p.table}' cannot be parsed (the file may be damaged); "
                              "export it again and resend"), exc, p.table) from exc
    if data.num_rows != int(count_text):
        raise _refuse(f"資料表「{p.table}」只讀到 {data.num_rows:,} 筆，檔案記載 {int(count_text):,} 筆："
                      "檔案不完整或已損毀",
                      f"read {data.num_rows:,} of the {int(count_text):,} rows of table '{p.table}': "
                      "the file is cut short or damaged")
    exported = ExportedTable(p.table, types, _render(data, types))
    mark_lost(runner.f, exported)
    return exported


def _render(data: pa.Table, types: dict[str, str]) -> pa.Table:
    """Native values as base.py's canonical text."""
    cols = []
    for name in data.column_names:
        col = data[name].combine_chunks()
        kind = types[name]
        if kind == "Boolean":
            col = pc.if_else(pc.equal(col, "1"), "true", pc.if_else(pc.equal(col, "0"), "false", col))
        elif kind == "DateTime":
            col = pc.replace_substring_regex(col, r"^(\d{4}-\d{2}-\d{2}) 00:00:00$", r"\1")
        elif kind in _NUMBER_TYPES:
            col = _plain_decimal(col)
        cols.append(col)
    return pa.table(cols, names=data.column_names)


def _plain_decimal(col: pa.Array) -> pa.Array:
    """printf's %g writes very large or small numbers with an exponent: spell them out."""
    sci = pc.fill_null(pc.match_substring_regex(col, "[eE]"), False)
    if not pc.any(sci).as_py():
        return col
    values = col.to_pylist()
    for i in pc.indices_nonzero(sci).to_pylist():
        try:
            values[i] = _fmt_decimal(Decimal(values[i]))
        except InvalidOperation:
            pass  # left as is: the field rules report it
    return pa.array(values, pa.string())


def _fmt_decimal(d: Decimal) -> str:
    text = format(d, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def mark_lost(f: AccessFile, t: ExportedTable) -> None:
    """Mark cells mdbtools could not render: out-of-range dates and characters printed as '?'."""
    blob: bytes | None = None
    for name, kind in t.types.items():
        col = t.data[name].combine_chunks()
        if kind == "DateTime":
            mask = pc.fill_null(pc.starts_with(col, _BAD_DATE), False)
            if pc.any(mask).as_py():
                t.lost[name], t.why[name] = mask, "date"
        elif kind in _TEXT_TYPES:
            has_q = pc.fill_null(pc.match_substring(col, "?"), False)
            if not pc.any(has_q).as_py():
                continue
            if blob is None:
                blob = f.path.read_bytes()
            mask = has_q.to_pylist()
            for i in pc.indices_nonzero(has_q).to_pylist():
                mask[i] = not stored_as_read(col[i].as_py(), blob, f.jet3_charset if f.jet3 else None)
            if any(mask):
                t.lost[name], t.why[name] = pa.array(mask, pa.bool_()), "char"


def stored_as_read(value: str, blob: bytes, jet3_charset: str | None) -> bool:
    """Whether a value holding '?' is what the file stores: its bytes, encoded as Access stores text,
    occur in the file. Otherwise the '?' stand for characters mdbtools could not convert. Jet 4/ACE
    text is UTF-16LE, or 'compressed' (FF FE, one byte per character ≤ U+00FF, 00 switching modes)."""
    if jet3_charset is not None:
        try:
            return value.encode(jet3_charset) in blob
        except UnicodeEncodeError:
            return False
    if value.encode("utf-16-le") in blob:
        return True
    if "\x00" in value:
        return False
    compressed, narrow = bytearray(b"\xff\xfe"), True
    for ch in value:
        wide = ord(ch) > 0xFF
        if wide == narrow:  # switch modes
            compressed.append(0)
            narrow = not wide
        compressed += ch.encode("utf-16-le") if wide else bytes([ord(ch)])
    return bytes(compressed) in blob


@contextmanager
def session(path: Path) -> Iterator[_Runner]:
    """Header checks, a scratch folder, and every child gone on the way out; whatever a damaged
    file provokes in parsing becomes F01."""
    f = inspect_file(Path(path).absolute())  # absolute: a name starting with '-' is no option
    with tempfile.TemporaryDirectory(prefix="inservice-access-") as tmp:
        runner = _Runner(f, Path(tmp))
        try:
            yield runner
        except UploadRefused:
            raise
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise unreadable(NOT_ACCESS, exc, f.path.name) from exc
        finally:
            runner.close()


def export_table(path: Path, table: str) -> ExportedTable:
    """One table of an Access file, checked as read_access checks it (F01 on any doubtful read)."""
    with session(path) as runner:
        return _finish_table(runner, _start_table(runner, table))


def list_tables(path: Path) -> list[str]:
    with session(path) as runner:
        return _list_tables(runner)


# --- the upload --------------------------------------------------------------------------------

_REASONS = {
    "date": ("日期不在 1899-12-30 至 4637 年之間", "date outside 1899-12-30 … 4637"),
    "char": ("含基本多文種平面以外的字元", "character outside the basic plane"),
}


def _reason(f: AccessFile, why: str) -> tuple[str, str]:
    if why == "char" and f.jet3:
        return f"含 {f.jet3_charset} 字碼表以外的字元", f"character outside code page {f.jet3_charset}"
    return _REASONS[why]


def _find_table(rt: RecordType, names: list[str]) -> str | None:
    folded = [fold_header(n) for n in names]
    for wanted in rt.sheet_names:  # the label first, then the English name
        if fold_header(wanted) in folded:
            return names[folded.index(fold_header(wanted))]
    return None


def _canonical(f: AccessFile, rt: RecordType, t: ExportedTable) -> tuple[pa.Table, list[dict]]:
    where = f"資料表「{t.name}」"
    names = list(t.types)
    mapping, unknown = match_headers(rt, names, where)
    for i in mapping:
        name = names[i]
        if t.types[name] not in _READABLE_TYPES:
            raise _refuse(f"{where}的欄位「{name}」是 Access 的 {t.types[name]} 型別，無法讀成文字",
                          f"column '{name}' of table '{t.name}' is of Access type {t.types[name]}, "
                          "which cannot be read as text")
    columns: dict[str, pa.Array] = {}
    lost_by_code: dict[str, tuple[pa.Array, str]] = {}
    for i, code in mapping.items():
        name = names[i]
        col = t.data[name].combine_chunks()
        if name in t.lost:
            col = pc.if_else(t.lost[name], LOST, col)
            lost_by_code[code] = (t.lost[name], t.why[name])
        columns[code] = col
    rows = pa.array(range(1, t.data.num_rows + 1), pa.int64())
    out = canonical_table(rt, rows, columns)
    notes = extra_columns_note(rt, unknown, where)
    if lost_by_code:
        codes = fold(out["course_code"].combine_chunks()).to_pylist()
        rule = rt.error_prefix + "02"
        r = RULES[rule]
        for code, (mask, why) in lost_by_code.items():
            label = rt.field(code).label
            zh, en = _reason(f, why)
            for i in pc.indices_nonzero(mask).to_pylist():
                notes.append({
                    "record": rt.name, "row": i + 1, "field": code, "rule": rule, "severity": "error",
                    "course_code": codes[i],
                    "message_zh": f"{r.zh}（{label}）：Access 讀取器無法如實表示此值（{zh}）",
                    "message_en": f"{r.en} ({code}): the Access reader cannot represent this value "
                                  f"faithfully ({en})",
                })
    return out, notes


def read_access(path: Path) -> RawUpload:
    with session(path) as runner:
        return upload_from_tables(runner.f, read_tables(runner))


def read_tables(runner: _Runner) -> dict[str, ExportedTable]:
    """The 課程 and 研習名單 tables (keyed by record type name) that the file holds, each checked."""
    names = _list_tables(runner)
    found = {rt.name: _find_table(rt, names) for rt in RECORD_TYPES}
    # both tables are read side by side; a doubtful read (F01) outranks a missing table (F07)
    pending = {k: _start_table(runner, t) for k, t in found.items() if t is not None}
    exported = {k: _finish_table(runner, p) for k, p in pending.items()}
    if len(exported) < len(RECORD_TYPES):
        # a cut catalog can list fewer tables and exit 0: make sure it is whole before F07
        _finish_table(runner, _start_table(runner, "MSysObjects"))
    return exported


def upload_from_tables(f: AccessFile, exported: dict[str, ExportedTable]) -> RawUpload:
    """The canonical upload from the exported 課程/研習名單 tables (keyed by record type name)."""
    tables, notes = [], []
    for rt in RECORD_TYPES:
        if rt.name not in exported:
            raise UploadRefused("F07", f"缺少資料表「{rt.label}」（或 {rt.sheet_names[1]}）",
                                f"table '{rt.label}' (or '{rt.sheet_names[1]}') is missing")
        table, note = _canonical(f, rt, exported[rt.name])
        tables.append(table)
        notes += note
    return RawUpload(tables[0], tables[1], notes)
