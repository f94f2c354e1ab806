"""The XML reader read in two halves side by side (a large file) gives what one whole read gives: the
same tables, or, for a file either half finds wrong, the same refusal with the same line."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from inservice.config import Limits
from inservice.loaders import xml
from inservice.loaders.base import UploadRefused
from tests.builders import attendee, course, make_id, write_xml
from tests.conftest import fixture_cases, load_expected

RNG = random.Random(5)


@pytest.fixture
def split_always(monkeypatch):
    monkeypatch.setattr(xml, "SPLIT_MIN_BYTES", 0)


def _rows(n: int) -> tuple[list[dict], list[dict]]:
    courses = [course(f"C{i}", title=f"研習 {i} & <實作>") for i in range(3)]
    attendance = [attendee(f"C{i % 3}", make_id(RNG)) for i in range(n)]
    attendance[5]["name"] = ""  # an empty element
    attendance[7].pop("school_code")  # a missing one
    attendance[-2]["hours_granted"] = " 3 "
    return courses, attendance


def outcome(path: Path):
    try:
        raw = xml.read_xml(path)
    except UploadRefused as refusal:
        return ("refused", refusal.rule, refusal.detail_zh, refusal.detail_en)
    return (raw.courses.to_pylist(), raw.attendance.to_pylist(), raw.meta)


def whole(path: Path):
    try:
        raw = xml._read(path, str(path))
    except UploadRefused as refusal:
        return ("refused", refusal.rule, refusal.detail_zh, refusal.detail_en)
    return (raw.courses.to_pylist(), raw.attendance.to_pylist(), raw.meta)


@pytest.mark.parametrize("encoding", ["UTF-8", "Big5"])
def test_halves_read_as_the_whole(tmp_path, split_always, encoding) -> None:
    courses, attendance = _rows(40)
    p = write_xml(tmp_path / "T001_201705.xml", courses, attendance, encoding=encoding,
                  prolog="<!-- 匯出 -->\n")
    halves = xml._read_halves(p, xml._cut(p), Limits())  # the two children's read, not a fallback
    got = outcome(p)
    assert got == whole(p) == (halves.courses.to_pylist(), halves.attendance.to_pylist(), halves.meta)
    rows = [r["_row"] for r in got[1]]
    assert rows == list(range(1, 41))  # positions run on across the cut
    assert got[1][5]["name"] is None and got[1][7]["school_code"] is None and got[1][-2]["hours_granted"] == " 3 "
    assert got[0][0]["title"] == "研習 0 & <實作>" and got[2] == {"unit": "T001"}


def test_a_file_wrong_in_either_half_is_refused_as_read_whole(tmp_path, split_always) -> None:
    courses, attendance = _rows(40)
    text = write_xml(tmp_path / "x.xml", courses, attendance).read_text("utf-8")
    lines = text.splitlines(keepends=True)
    cases = {
        "unknown element late": lines[:-5] + [lines[-5].replace("<completed>", "<remark>x</remark><completed>")]
        + lines[-4:],
        "unknown element early": lines[:8] + [lines[8].replace("<completed>", "<x/><completed>")] + lines[9:],
        "not well-formed late": lines[:-4] + [lines[-4].replace("</name>", "</nam>")] + lines[-3:],
        "truncated": [text[: len(text) - 40]],
        "no root end": lines[:-1],
        "record in the wrong place": lines[:3] + ["<Record><unit_code>T001</unit_code></Record>\n"] + lines[3:],
    }
    for name, parts in cases.items():
        p = tmp_path / f"{name}.xml"
        p.write_text("".join(parts), encoding="utf-8")
        got = outcome(p)
        assert got == whole(p), name
        assert got[0] == "refused", name
        cut = xml._cut(p)
        if cut is not None:  # the halves find it wrong too: never tables from a wrong file
            with pytest.raises(UploadRefused):
                xml._read_halves(p, cut, Limits())


def test_no_cut_where_a_comment_cdata_or_pi_follows_the_root(tmp_path, split_always) -> None:
    courses, attendance = _rows(20)
    p = write_xml(tmp_path / "a.xml", courses, attendance)
    text = p.read_text("utf-8")
    for extra in ("<!-- </Record> -->", "<![CDATA[</Record>]]>", "<?pi </Record>?>"):
        q = tmp_path / "b.xml"
        q.write_text(text.replace("<Attendance>\n", f"<Attendance>\n{extra}\n", 1), encoding="utf-8")
        assert xml._cut(q) is None
        assert outcome(q) == whole(q)


def test_a_quoted_gt_in_a_root_attribute(tmp_path, split_always) -> None:
    courses, attendance = _rows(20)
    p = write_xml(tmp_path / "a.xml", courses, attendance, unit="T>1")
    assert outcome(p) == whole(p)
    assert outcome(p)[2] == {"unit": "T>1"}


@pytest.mark.parametrize("case", fixture_cases("defects-xml"), ids=lambda c: c.name)
def test_the_xml_fixtures_read_in_halves_as_whole(case) -> None:
    _, src = load_expected(case)
    halves = xml._read_halves(src, xml._cut(src), Limits())
    one = xml._read(src, str(src))
    assert halves.courses.equals(one.courses) and halves.attendance.equals(one.attendance)
    assert halves.meta == one.meta and halves.attendance.num_rows > 1


def test_an_earlier_file_s_errors_do_not_decide_a_later_refusal(tmp_path) -> None:
    """A file refused F07 (text where only elements may be), then a truncated one in the same thread:
    F01, as when it is read first."""
    courses, attendance = _rows(20)
    text = write_xml(tmp_path / "a.xml", courses, attendance).read_text("utf-8")
    shape = tmp_path / "shape.xml"
    shape.write_text(text.replace("<Attendance>\n", "<Attendance>\n<![CDATA[x]]>\n", 1), encoding="utf-8")
    cut = tmp_path / "cut.xml"
    cut.write_text(text[: len(text) // 2], encoding="utf-8")
    assert outcome(shape)[:2] == ("refused", "F07")
    assert outcome(cut)[:2] == ("refused", "F01")
