"""Build partner uploads nobody has seen: Excel (.xlsx, .xls), XML (UTF-8, Big5), from plain rows.

The national IDs are made here from spec §4 directly, independent of the code under test.
"""

from __future__ import annotations

import random
from pathlib import Path
from xml.sax.saxutils import escape

from openpyxl import Workbook

from inservice.schemas.fields import ATTENDANCE, COURSE

_LETTERS = dict(zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                    (10, 11, 12, 13, 14, 15, 16, 17, 34, 18, 19, 20, 21, 22, 35, 23, 24, 25, 26, 27, 28, 29,
                     32, 30, 31, 33), strict=True))


def id_check_digit(first9: str) -> int:
    """The last digit that makes `first9` + digit valid (spec §4)."""
    v = _LETTERS[first9[0]]
    second = _LETTERS[first9[1]] % 10 if first9[1].isalpha() else int(first9[1])
    digits = [second] + [int(c) for c in first9[2:]]
    total = v // 10 + (v % 10) * 9 + sum(d * w for d, w in zip(digits, (8, 7, 6, 5, 4, 3, 2, 1), strict=True))
    return (10 - total % 10) % 10


def make_id(rng: random.Random, kind: str = "national") -> str:
    letter = rng.choice("ABCDEFGHJKLMNPQRSTUVXYWZIO")
    second = {"national": rng.choice("12"), "new_resident": rng.choice("89"), "old_resident": rng.choice("ABCD")}[kind]
    body = f"{letter}{second}{rng.randrange(10**7):07d}"
    return body + str(id_check_digit(body))


def course(code: str, **over: object) -> dict:
    row = {
        "unit_code": "T001", "course_code": code, "title": f"素養導向教學設計工作坊{code}",
        "organizer": "國立臺灣師範大學",
        "organizer_type": "3", "county_code": "63000", "start_date": "2017-05-10", "end_date": "2017-05-10",
        "hours": "6", "class_type": "1", "category": "A", "delivery": "3", "time_slot": "1", "audience": "E;J",
        "tags": "T2", "closed_date": "2017-05-12",
    }
    row.update(over)
    return row


def attendee(code: str, national_id: str, **over: object) -> dict:
    row = {"unit_code": "T001", "course_code": code, "national_id": national_id, "name": "王小明",
           "school_code": "423605", "hours_granted": "6", "completed": "Y"}
    row.update(over)
    return row


def _headers(rt, rows: list[dict], by: str) -> list[str]:
    codes = [f.code for f in rt.fields if any(f.code in r for r in rows)] or [
        f.code for f in rt.fields if f.required_in("file")]
    extra = sorted({k for r in rows for k in r} - set(rt.codes))  # unknown columns, kept as given
    return [rt.field(c).label if by == "label" else c for c in codes] + extra, codes + extra


def write_xlsx(path: Path, courses: list[dict], attendance: list[dict], by: str = "label",
               sheet_names: tuple[str, str] = ("課程", "研習名單")) -> Path:
    wb = Workbook()
    # two files with the same rows written within one second would be byte-identical (F08 duplicate):
    # the title keeps files of different names apart, as real partner files are
    wb.properties.title = _excel_text(path.name)
    wb.remove(wb.active)
    for rt, rows, sheet in ((COURSE, courses, sheet_names[0]), (ATTENDANCE, attendance, sheet_names[1])):
        ws = wb.create_sheet(sheet)
        headers, codes = _headers(rt, rows, by)
        ws.append(headers)
        for r in rows:
            values = [_excel_text(r.get(c)) for c in codes]
            ws.append(values)
            if any(isinstance(v, str) and v.startswith("=") for v in values):  # (max_row costs a scan)
                for cell in ws[ws.max_row]:  # text that starts with "=" stays text, as a cell typed '=… is
                    if isinstance(cell.value, str) and cell.value.startswith("="):
                        cell.data_type = "s"
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path


_CONTROL = {c: f"_x{c:04X}_" for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20)]}


def _excel_text(value: object) -> object:
    """Control characters as Excel stores them in a cell's XML (`_x0001_`): openpyxl refuses the
    characters themselves, readers decode the escapes back."""
    return value.translate(_CONTROL) if isinstance(value, str) else value


def write_xls(path: Path, courses: list[dict], attendance: list[dict]) -> Path:
    import xlwt

    wb = xlwt.Workbook(encoding="utf-8")
    for rt, rows in ((COURSE, courses), (ATTENDANCE, attendance)):
        ws = wb.add_sheet(rt.label)
        headers, codes = _headers(rt, rows, "label")
        for j, h in enumerate(headers):
            ws.write(0, j, h)
        for i, r in enumerate(rows, start=1):
            for j, c in enumerate(codes):
                if r.get(c) is not None:
                    ws.write(i, j, r[c])
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(str(path))
    return path


def write_xml(path: Path, courses: list[dict], attendance: list[dict], unit: str = "T001",
              month: str = "2017-05", encoding: str = "UTF-8", prolog: str = "") -> Path:
    def records(tag: str, rows: list[dict]) -> str:
        return "".join(
            f"<{tag}>" + "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in r.items() if v is not None) + f"</{tag}>\n"
            for r in rows)

    text = (f'<?xml version="1.0" encoding="{encoding}"?>\n{prolog}'
            f'<Transmission unit="{unit}" month="{month}" specVersion="1.0">\n'
            f"<Courses>\n{records('Course', courses)}</Courses>\n"
            f"<Attendance>\n{records('Record', attendance)}</Attendance>\n</Transmission>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("big5" if encoding.lower() == "big5" else "utf-8"))
    return path


# --- planning survey exports (planning-survey.md §2), from plain rows -----------------------------------
def school_plan(school: str, domain: str, **over: object) -> dict:
    row = {"school_year": "106", "school_code": school, "school_level": "E", "students": "300", "teachers": "30",
           "domain": domain, "planned_hours": "10", "modes": "1", "times": "1", "places": "P1", "tiers": "1",
           "deliveries": "1", "submitted_at": "2017-08-20 10:00:00"}
    row.update(over)
    return row


def teacher_plan(national_id: str, school: str, domain: str, **over: object) -> dict:
    row = {"school_year": "106", "national_id": national_id, "school_code": school, "domain": domain,
           "planned_hours": "10", "modes": "1", "times": "1", "places": "P1", "tiers": "1", "deliveries": "1",
           "submitted_at": "2017-09-10 10:00:00"}
    row.update(over)
    return row


def _plan_type(rows: list[dict]):
    from inservice.schemas.plans import SCHOOL_PLAN, TEACHER_PLAN

    return TEACHER_PLAN if any("national_id" in r for r in rows) else SCHOOL_PLAN


def write_plan_csv(path: Path, rows: list[dict], by: str = "code", bom: bool = False) -> Path:
    """A plan export as CSV (UTF-8, optionally with BOM); a None value is an empty cell."""
    import csv

    rt = _plan_type(rows)
    headers, codes = _headers(rt, rows, by)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8-sig" if bom else "utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(headers)
        w.writerows([["" if r.get(c) is None else r[c] for c in codes] for r in rows])
    return path


def write_plan_xlsx(path: Path, rows: list[dict], by: str = "label") -> Path:
    rt = _plan_type(rows)
    wb = Workbook()
    wb.properties.title = path.name
    ws = wb.active
    ws.title = rt.label
    headers, codes = _headers(rt, rows, by)
    ws.append(headers)
    for r in rows:
        ws.append([r.get(c) for c in codes])
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path
