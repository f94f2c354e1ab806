"""The Access reader (inservice/loaders/access.py) against real files of every Access version.

- the two Access partner uploads give exactly their expected.json (directly and through ingest);
- every edge file is read value by value against its `.truth.json` (what an independent library read);
  a value mdbtools cannot reproduce must be marked lost and become a C02/A02 row finding;
- damaged files are refused as F01, quickly, without a partial table and without harming this process.
"""

from __future__ import annotations

import collections
import json
import os
import random
import shutil
import stat
import sys
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from inservice.loaders import access, reader_for
from inservice.loaders.access import (
    JET3_CHARSET_ENV,
    LOST,
    ExportedTable,
    export_table,
    list_tables,
    read_access,
    stored_as_read,
)
from inservice.loaders.base import UploadRefused, canonical_schema
from inservice.schemas.fields import ATTENDANCE, COURSE
from inservice.validations.engine import Context, validate
from inservice.validations.pseudonym import Pseudonymiser

pytestmark = [pytest.mark.skipif(shutil.which("mdb-export") is None, reason="mdbtools is not installed"),
              pytest.mark.both_backends]  # tests reaching a warehouse run on each of --backends

ACCESS = Path(__file__).parent / "fixtures" / "access"
EDGE = ACCESS / "edge"
T001 = ACCESS / "access-accdb-native" / "T001" / "T001_201705.accdb"
T003 = ACCESS / "access-mdb-text" / "T003" / "T003_201705.mdb"
CASES = ["access-mdb-text", "access-accdb-native"]
LOST_MESSAGE = "the Access reader cannot represent this value faithfully"
LOST_MESSAGE_ZH = "Access 讀取器無法如實表示此值"


def ctx(unit: str, received: date = date(2017, 6, 3)) -> Context:
    return Context(unit=unit, channel="file", received_on=received, pseudonymiser=Pseudonymiser(b"k"))


def keys(findings: list[dict]) -> collections.Counter:
    return collections.Counter((f["record"], f["row"], f["rule"], f["field"], f["severity"], f["course_code"])
                               for f in findings)


def expected(case: str) -> tuple[dict, Path]:
    d = json.loads((ACCESS / case / "expected.json").read_text(encoding="utf-8"))
    return d, ACCESS / case / d["unit"] / d["file"]


@pytest.fixture(autouse=True)
def _default_charset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(JET3_CHARSET_ENV, raising=False)


# --- (a) the partner uploads -------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_upload_validates_to_expected(case: str) -> None:
    exp, path = expected(case)
    raw = reader_for(path.suffix.lower())(path)
    v = validate(raw, ctx(exp["unit"]))
    assert keys(v.findings.to_pylist()) == keys(exp["findings"])
    assert v.courses["_ok"].to_pylist().count(True) == exp["courses_accepted"]
    assert v.attendance["_ok"].to_pylist().count(True) == exp["attendance_accepted"]


@pytest.mark.parametrize("case", CASES)
def test_upload_is_canonical(case: str) -> None:
    _, path = expected(case)
    raw = read_access(path)
    for rt, table in ((COURSE, raw.courses), (ATTENDANCE, raw.attendance)):
        assert table.schema == canonical_schema(rt)
        assert table["_row"].to_pylist() == list(range(1, table.num_rows + 1))
    assert raw.notes == []
    if case == "access-accdb-native":  # native yes/no, dates and numbers rendered as text
        assert set(raw.attendance["completed"].to_pylist()) == {"true"}  # a Boolean column
        assert raw.courses["start_date"][0].as_py() == "2017-05-04"
        assert raw.courses["hours"][0].as_py() == "18"


@pytest.mark.parametrize("case", CASES)
def test_upload_through_ingest(case: str, settings) -> None:
    ingest = pytest.importorskip("inservice.ingest")
    from tests.conftest import RECEIVED, drop

    exp, src = expected(case)
    [r] = ingest.ingest_paths([drop(settings, src)], settings, RECEIVED)
    assert r["status"] == "loaded" and r["refusal"] is None
    assert r["courses"]["accepted"] == exp["courses_accepted"]
    assert r["attendance"]["accepted"] == exp["attendance_accepted"]
    assert keys(r["findings"]) == keys(exp["findings"])


def test_edge_files_are_not_uploads() -> None:
    with pytest.raises(UploadRefused) as e:
        read_access(EDGE / "small_V2010.accdb")
    assert e.value.rule == "F07" and "開課單位類別" in e.value.detail_zh


# --- (b) every edge file against its truth -----------------------------------------------------

TYPES = {"TEXT": "Text", "DOUBLE": "Double", "BOOLEAN": "Boolean", "SHORT_DATE_TIME": "DateTime",
         "BYTE": "Byte", "INT": "Integer", "LONG": "Long Integer", "MONEY": "Currency",
         "GUID": "Replication ID"}
JET3_TRUTH = EDGE / "jet3_big5_cp950hdr_norename.mdb.truth.json"
# the Jet 3 files without a truth file hold the same bytes, with Table1 renamed 課程表 (README)
EDGE_CASES = [(p.name.removesuffix(".truth.json"), p, {}) for p in sorted(EDGE.glob("*.truth.json"))] + [
    ("jet3_big5_cp950hdr.mdb", JET3_TRUTH, {"Table1": "課程表"}),
    ("jet3_big5_cp1252hdr.mdb", JET3_TRUTH, {"Table1": "課程表"}),
]


def as_truth_text(value: str, truth: dict) -> str:
    """The truth reader decoded Jet 3 text as UTF-8 (its `charset`): the Big5 bytes, mangled. Our
    correct Chinese, encoded back to Big5 and decoded the same way, must give the same text."""
    if truth["charset"] == "UTF-8" and truth["format"].endswith("[VERSION_3]"):
        return value.encode("cp950").decode("utf-8", "replace")
    return value


def same(truth_value: object, got: str | None, kind: str) -> bool:
    """Whether the reader's text is the truth's value, under base.py's rendering rules."""
    if truth_value is None or truth_value == "":
        # mdbtools reads '' as NULL; both are "missing" to the rules (spec §2.3), see access.py
        return got is None
    if got is None:
        return False
    if kind == "DateTime":
        return (got if len(got) > 10 else got + " 00:00:00") == truth_value
    if kind == "Boolean":
        return got == ("true" if truth_value else "false")
    if kind in ("Double", "Single", "Currency", "Byte", "Integer", "Long Integer"):
        return Decimal(got) == Decimal(str(truth_value))
    return got == truth_value


@pytest.mark.parametrize(("name", "truth_path", "renamed"), EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_edge_file_matches_truth(name: str, truth_path: Path, renamed: dict, monkeypatch) -> None:
    if name == "jet3_big5_cp1252hdr.mdb":  # its header names the wrong code page: say which is right
        monkeypatch.setenv(JET3_CHARSET_ENV, "CP950")
    truth = json.loads(truth_path.read_text(encoding="utf-8"))
    path = EDGE / name
    names = list_tables(path)
    want = [renamed.get(t["name"], t["name"]) for t in truth["tables"]]
    assert sorted(as_truth_text(n, truth) for n in names) == sorted(as_truth_text(n, truth) for n in want)
    lost_cells = 0
    for t in truth["tables"]:
        got = export_table(path, renamed.get(t["name"], t["name"]))
        columns = [c for c, _ in t["columns"]]
        assert [as_truth_text(c, truth) for c in got.types] == columns
        assert list(got.types.values()) == [TYPES[k] for _, k in t["columns"]]
        assert got.data.num_rows == len(t["rows"])
        assert all(c.type == pa.string() for c in got.data.columns)
        for i, row in enumerate(t["rows"]):
            for col, tv in zip(got.types, row, strict=True):
                kind, value = got.types[col], got.data[col][i].as_py()
                if kind == "Text" and value is not None:
                    value = as_truth_text(value, truth)
                lost = col in got.lost and got.lost[col][i].as_py()
                if lost:  # not reproduced: must be marked, with the right reason, and really differ
                    lost_cells += 1
                    assert got.why[col] == ("date" if kind == "DateTime" else "char")
                    assert not same(tv, value, kind), (col, i, tv, value)
                else:
                    assert same(tv, value, kind), (name, t["name"], col, i, tv, value)
    if name.startswith("edge_"):  # 0113-09-07, 9999-12-31 ×2, 1753-01-01 and 林𡘙豪
        assert lost_cells == 5
    elif name.startswith("small_"):  # 林𡘙豪
        assert lost_cells == 1


@pytest.mark.parametrize("name", ["jet3_big5_cp950hdr.mdb", "jet3_big5_cp1252hdr.mdb",
                                  "jet3_big5_cp950hdr_norename.mdb"])
def test_jet3_reads_chinese_by_default(name: str) -> None:
    """CP950 is the default for Jet 3, so even the file whose header says 1252 reads right."""
    path = EDGE / name
    first = "Table1" if "norename" in name else "課程表"
    assert list_tables(path) == [first, "Table2", "Table3", "Table4"]
    t = export_table(path, first)
    assert t.data.to_pylist()[1]["A"] == "臺北市1" and t.data.to_pylist()[1]["B"] == "研習名單A"
    assert next(iter(export_table(path, "Table2").types)) == "欄位名1"
    assert not t.lost


def test_jet3_charset_override(monkeypatch: pytest.MonkeyPatch) -> None:
    path = EDGE / "jet3_big5_cp1252hdr.mdb"
    monkeypatch.setenv(JET3_CHARSET_ENV, "CP1252")  # the header's claim: wrong, and it shows
    assert "課程表" not in list_tables(path)
    monkeypatch.setenv(JET3_CHARSET_ENV, " CP950 ")
    assert "課程表" in list_tables(path)
    monkeypatch.setenv(JET3_CHARSET_ENV, "")  # blank: the default, never an empty MDB_JET3_CHARSET
    assert "課程表" in list_tables(path)
    monkeypatch.setenv(JET3_CHARSET_ENV, "no-such-charset")
    with pytest.raises(ValueError, match=JET3_CHARSET_ENV):  # the operator's mistake, not an F01
        list_tables(path)


def edge_upload(name: str) -> tuple[dict[str, ExportedTable], object]:
    """An edge file's two tables as read_access reads them, plus the 開課單位類別 column they lack."""
    path = EDGE / name
    with access.session(path) as runner:
        tables = access.read_tables(runner)
        f = runner.f
    course = tables["course"]
    course.data = course.data.append_column("開課單位類別", pa.array(["1"] * course.data.num_rows))
    course.types["開課單位類別"] = "Text"
    return tables, f


@pytest.mark.parametrize("name", ["edge_V2003.mdb", "edge_V2010.accdb", "small_V2000.mdb",
                                  "small_V2019.accdb"])
def test_lost_values_become_row_findings(name: str) -> None:
    tables, f = edge_upload(name)
    raw = access.upload_from_tables(f, tables)
    v = validate(raw, ctx("T001", date(2025, 1, 31)))
    findings = v.findings.to_pylist()
    marked = 0
    for rt, key, table, typed in (("course", "course", raw.courses, v.courses),
                                  ("attendance", "attendance", raw.attendance, v.attendance)):
        t = tables[key]
        prefix = "C" if rt == "course" else "A"
        mapping = {f.label: f.code for f in (COURSE if rt == "course" else ATTENDANCE).fields}
        for col, mask in t.lost.items():
            for i in [i for i, m in enumerate(mask.to_pylist()) if m]:
                marked += 1
                code, row = mapping[col], i + 1
                assert table[code][i].as_py() == LOST  # never the wrong value
                hits = [x for x in findings if (x["record"], x["row"], x["field"], x["rule"]) ==
                        (rt, row, code, prefix + "02") and LOST_MESSAGE in x["message_en"]]
                assert len(hits) == 1 and hits[0]["severity"] == "error"
                assert LOST_MESSAGE_ZH in hits[0]["message_zh"]
                reason = "date outside 1899-12-30" if t.why[col] == "date" else "outside the basic plane"
                assert reason in hits[0]["message_en"]
                assert typed["_ok"][i].as_py() is False  # the row is rejected
    assert marked == (5 if name.startswith("edge_") else 1)


def test_lost_value_alone_rejects_its_row() -> None:
    """On a clean upload, mdbtools' two artefacts (as it prints them) reject exactly their rows."""
    exp, path = expected("access-accdb-native")
    with access.session(path) as runner:
        tables = access.read_tables(runner)
        f = runner.f
    base = validate(access.upload_from_tables(f, tables), ctx("T001"))
    ok_course = base.courses["_ok"].to_pylist().index(True)
    course_code = base.courses["course_code"][ok_course].as_py()
    att_ok = base.attendance["_ok"].to_pylist()
    att_codes = base.attendance["course_code"].to_pylist()
    ok_att = next(i for i, ok in enumerate(att_ok) if ok and att_codes[i] != course_code)
    for key, col, i, printed in (("course", "研習起日", ok_course, "1900-01-00 00:00:00"),
                                 ("attendance", "姓名", ok_att, "王??明")):
        t = tables[key]
        values = t.data[col].to_pylist()
        values[i] = printed
        t.data = t.data.set_column(t.data.column_names.index(col), col, pa.array(values, pa.string()))
        t.lost, t.why = {}, {}
        access.mark_lost(f, t)
        assert t.lost[col].to_pylist()[i] is True
    raw = access.upload_from_tables(f, tables)
    assert [(n["record"], n["row"], n["field"], n["rule"]) for n in raw.notes] == [
        ("course", ok_course + 1, "start_date", "C02"), ("attendance", ok_att + 1, "name", "A02")]
    v = validate(raw, ctx("T001"))
    assert v.courses["_ok"].to_pylist().count(True) == exp["courses_accepted"] - 1
    assert v.courses["_ok"][ok_course].as_py() is False
    assert v.attendance["_ok"][ok_att].as_py() is False
    # the other rejections: that course's attendance (A05); nothing else changes
    of_course = [i for i, c in enumerate(att_codes) if c == course_code]
    now_ok = v.attendance["_ok"].to_pylist()
    newly = [i for i, (a, b) in enumerate(zip(att_ok, now_ok, strict=True)) if a != b]
    assert sorted(newly) == sorted([ok_att, *[i for i in of_course if att_ok[i]]])


def test_question_marks_checked_against_the_file() -> None:
    """A '?' typed by the sender is kept; one standing for a lost character is not."""
    utf16 = "什麼??".encode("utf-16-le")
    assert stored_as_read("什麼??", b"xx" + utf16 + b"yy", None)
    assert stored_as_read("What??", b"\x00\xff\xfeWhat??\x00", None)  # Jet 4 compressed text
    mixed = b"\xff\xfeA\x00" + "什".encode("utf-16-le") + b"\x00?"  # compressed, switching modes
    assert stored_as_read("A什?", mixed, None)
    assert not stored_as_read("林??豪", "林𡘙豪".encode("utf-16-le"), None)
    assert stored_as_read("臺北?", "臺北?".encode("cp950"), "CP950")
    assert not stored_as_read("?@", b"\xfa\x40", "CP950")  # a Big5 造字 mdbtools cannot convert


# --- (c) damaged files -------------------------------------------------------------------------

def refused(path: Path, budget: float = 15.0) -> UploadRefused | None:
    """read_access's refusal (None if it read), asserting it was quick and raised nothing else."""
    start = time.monotonic()
    try:
        read_access(path)
        result = None
    except UploadRefused as exc:
        result = exc
    assert time.monotonic() - start < budget
    return result


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_zero_length_and_garbage(tmp_path: Path) -> None:
    rng = random.Random(7)
    header = T001.read_bytes()[:4096]
    cases = {
        "empty.accdb": b"",
        "garbage.mdb": bytes(rng.randrange(256) for _ in range(10_000)),
        "garbage_pages.accdb": bytes(rng.randrange(256) for _ in range(4096 * 8)),
        "header_then_garbage.accdb": header + bytes(rng.randrange(256) for _ in range(4096 * 30)),
        "text.mdb": "研習名單\n".encode() * 1000,
    }
    for name, data in cases.items():
        e = refused(write(tmp_path, name, data))
        assert e is not None and e.rule == "F01", name


def test_renamed_workbook(tmp_path: Path) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.Workbook()
    wb.active.title = "課程"
    wb.create_sheet("研習名單")
    xlsx = tmp_path / "T001_201705.xlsx"
    wb.save(xlsx)
    e = refused(write(tmp_path, "T001_201705.accdb", xlsx.read_bytes()))
    assert e is not None and e.rule == "F01" and "ZIP" in e.detail_en


@pytest.mark.parametrize("src", [T001, T003], ids=["accdb", "mdb"])
def test_cut_files(src: Path, tmp_path: Path) -> None:
    data = src.read_bytes()
    page = 4096 if data[0x14] else 2048
    rng = random.Random(src.name)
    pages = len(data) // page
    cuts = [len(data) // 2 + 1, len(data) - 1, 100, page * 3 - 7]  # not whole pages
    cuts += [page * k for k in sorted(rng.sample(range(1, pages), 10))] + [page * (pages - 1)]
    for n in cuts:
        e = refused(write(tmp_path, f"cut{src.suffix}", data[:n]))
        assert e is not None and e.rule == "F01", n


def test_half_a_big_table_is_not_a_table(tmp_path: Path) -> None:
    """The README's case: mdb-export prints part of a cut table and exits 0."""
    data = (EDGE / "big20k_V2010.accdb").read_bytes()
    cut = write(tmp_path, "big.accdb", data[: len(data) // 2 // 4096 * 4096])
    with pytest.raises(UploadRefused) as e:
        export_table(cut, "研習名單")
    assert e.value.rule == "F01"


@pytest.mark.parametrize("src", [T001, T003], ids=["accdb", "mdb"])
def test_flipped_bytes(src: Path, tmp_path: Path) -> None:
    """Header flips that mdbtools reads (magic, version, database key) refuse the file; a flip it
    ignores, or one inside a value, can leave a readable file: then every row is there."""
    data = src.read_bytes()
    page = 4096 if data[0x14] else 2048
    base = read_access(src)
    rng = random.Random(src.name)
    for off in (0, 5, 0x14, 0x3E, 0x41):
        b = bytearray(data)
        b[off] ^= 0xFF
        e = refused(write(tmp_path, f"h{src.suffix}", bytes(b)))
        assert e is not None and e.rule == "F01", off
    trials = [("header", [rng.randrange(0x15, page)]) for _ in range(8)]
    trials += [("data", [rng.randrange(page, len(data)) for _ in range(rng.randint(1, 6))])
               for _ in range(30)]
    outcomes = collections.Counter()
    for where, offsets in trials:
        b = bytearray(data)
        for off in offsets:
            b[off] = rng.randrange(256)
        path = write(tmp_path, f"f{src.suffix}", bytes(b))
        start = time.monotonic()
        try:
            raw = read_access(path)
        except UploadRefused as exc:
            assert exc.rule in ("F01", "F07"), (where, offsets, exc)
            outcomes[exc.rule] += 1
            continue
        finally:
            assert time.monotonic() - start < 15
        assert (raw.courses.num_rows, raw.attendance.num_rows) == (base.courses.num_rows,
                                                                   base.attendance.num_rows)
        outcomes["read"] += 1
    assert outcomes["F01"] > 0


# --- the isolation itself, with stand-in tools ---------------------------------------------------

def fake_tool(bindir: Path, name: str, script: str) -> None:
    p = bindir / name
    p.write_text(f"#!/bin/sh\n{script}\n")
    p.chmod(p.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def bindir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ['PATH']}")
    return d


def test_a_hanging_tool_is_stopped(bindir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access, "TIMEOUT_S", 1.0)
    fake_tool(bindir, "mdb-count", "sleep 30")
    e = refused(T001, budget=8)
    assert e is not None and e.rule == "F01" and "timed out" in e.detail_en


def test_memory_is_limited(bindir: Path) -> None:
    real = shutil.which("mdb-count")
    # 1.5 GiB is over the 1 GiB address-space limit: the stand-in fails before running the real tool
    fake_tool(bindir, "mdb-count", f'"{sys.executable}" -c "bytearray(1536 << 20)" || exit 3\n'
                                   f'exec {real} "$@"')
    e = refused(T001)
    assert e is not None and e.rule == "F01" and "exit status 3" in e.detail and "export it again" in e.detail_en


def test_a_crashing_tool(bindir: Path) -> None:
    fake_tool(bindir, "mdb-export", "kill -SEGV $$")
    e = refused(T001)
    assert e is not None and e.rule == "F01" and "signal 11" in e.detail and "export it again" in e.detail_en


def test_stderr_is_an_error_but_the_unsupported_type_warning(bindir: Path) -> None:
    real = shutil.which("mdb-export")
    warning = "Warning: mdb_col_to_string called on unsupported data type 18."
    fake_tool(bindir, "mdb-export", f'{real} "$@"; rc=$?; echo "{warning}" >&2; exit $rc')
    assert refused(T001) is None
    fake_tool(bindir, "mdb-export", f'{real} "$@"; rc=$?; echo "offset 1234 is beyond EOF" >&2; exit $rc')
    e = refused(T001)
    assert e is not None and e.rule == "F01" and "beyond EOF" in e.detail and "export it again" in e.detail_en


def test_row_count_must_match(bindir: Path) -> None:
    fake_tool(bindir, "mdb-count", "echo 950")
    e = refused(T001)
    assert e is not None and e.rule == "F01" and "rows" in e.detail_en


def test_missing_table_is_f07(tmp_path: Path) -> None:
    e = refused(EDGE / "jet3_big5_cp950hdr.mdb")
    assert e is not None and e.rule == "F07" and "課程" in e.detail_zh
