"""The planning survey at national size: one school year generated, ingested and published.

Generates school year 106 as the planning service exports it — 3,900 schools × ~4 domains (school
plans) and 200,000 teachers × ~3 domains (teacher plans, ~600,000 rows, the IDs with their check
digits, ~0.5% invalid) — as .xlsx (and the teacher export also as .csv), plus the year's supply
straight into the warehouse (40,000 courses, ~2,000,000 completed attendance rows of the same
teachers, pseudonymised with the warehouse's key so plans and attendance join). Then, in the same
run, `--repeat` times each:
  raw      — fastexcel reading the teacher export's sheet into Arrow (the reader the loader uses);
  intake   — `PlanIngestor.ingest` of that export between opening and closing the warehouse, as
             `inservice ingest` does: checks, read in the child process, every P-rule, the revision's
             merge in one transaction, the JSON + Excel receipts (the analysts' copy is timed apart:
             it grows with the whole warehouse, not with the export);
  publish  — `publish_plans`: the four publications (stat_plan_* tables, four workbooks, four pages).
Prints the medians and the ratios (targets: intake ≤ 1.5× raw; publications ≤ 15 s).
Usage: python bench/plans.py [--teachers 200000] [--schools 3900] [--repeat 3] [--keep]
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import statistics
import tempfile
import time
import zipfile
from dataclasses import replace
from datetime import date
from pathlib import Path
from xml.sax.saxutils import escape

import fastexcel
import pyarrow as pa
import pyarrow.csv as pacsv

from inservice.config import Settings
from inservice.plans.intake import PlanIngestor
from inservice.plans.publish import publish_plans
from inservice.schemas.plans import SCHOOL_PLAN, TEACHER_PLAN
from inservice.schemas.reference import schools
from inservice.validations.pseudonym import Pseudonymiser, warehouse_key
from inservice.warehouse import checks
from inservice.warehouse.analyst import publish_snapshot
from inservice.warehouse.store import Warehouse

TARGETS = {"intake_ratio": 1.5, "publish_s": 15.0}
LETTERS = dict(zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", (10, 11, 12, 13, 14, 15, 16, 17, 34, 18, 19, 20, 21, 22, 35, 23,
                                                   24, 25, 26, 27, 28, 29, 32, 30, 31, 33), strict=True))
RECEIVED = "2017-10-02T10:00:00+08:00"


def make_id(rng: random.Random) -> str:
    body = f"{rng.choice('ABCDEFGHJKLMNPQRSTUVXYWZIO')}{rng.choice('12')}{rng.randrange(10**7):07d}"
    v = LETTERS[body[0]]
    total = v // 10 + (v % 10) * 9 + sum(int(c) * w for c, w in zip(body[1:], (8, 7, 6, 5, 4, 3, 2, 1), strict=True))
    return body + str((10 - total % 10) % 10)


def _col(i: int) -> str:
    out = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out = chr(65 + r) + out
    return out


def write_xlsx(path: Path, sheet: str, header: list[str], rows: list[list[str]]) -> None:
    """A plain .xlsx (inline strings), written as its XML: openpyxl would take a minute for 600,000 rows."""
    cols = [_col(i) for i in range(len(header))]

    def row_xml(n: int, values: list[str]) -> str:
        cells = "".join(f'<c r="{c}{n}" t="inlineStr"><is><t>{escape(v)}</t></is></c>'
                        for c, v in zip(cols, values, strict=True) if v != "")
        return f'<row r="{n}">{cells}</row>'

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.'
                   'openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/'
                   'vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/'
                   'xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-'
                   'officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" '
                   'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>')
        z.writestr("_rels/.rels", '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.'
                   'openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.'
                   'openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>'
                   '</Relationships>')
        z.writestr("xl/workbook.xml", '<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.'
                   'openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/'
                   f'officeDocument/2006/relationships"><sheets><sheet name="{sheet}" sheetId="1" r:id="rId1"/>'
                   '</sheets></workbook>')
        z.writestr("xl/_rels/workbook.xml.rels", '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns='
                   '"http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type='
                   '"http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target='
                   '"worksheets/sheet1.xml"/></Relationships>')
        with z.open("xl/worksheets/sheet1.xml", "w") as fh:
            fh.write(b'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/'
                     b'spreadsheetml/2006/main"><sheetData>')
            fh.write(row_xml(1, header).encode())
            for start in range(0, len(rows), 10_000):
                fh.write("".join(row_xml(n, r) for n, r in enumerate(rows[start:start + 10_000], start=start + 2))
                         .encode())
            fh.write(b"</sheetData></worksheet>")


def generate(folder: Path, n_schools: int, n_teachers: int, seed: int = 106):
    rng = random.Random(seed)
    ref = schools()
    codes = ref["school_code"].to_pylist()[:n_schools]
    levels = dict(zip(codes, ref["level"].to_pylist()[:n_schools], strict=True))
    lists = {"modes": "123", "times": "123456", "places": ["P1", "P2", "P3", "P4", "P5", "P6", "P7"], "tiers": "1234",
             "deliveries": "123456"}

    def choices() -> list[str]:
        return [";".join(rng.sample(list(v), rng.randint(1, 2))) for v in lists.values()]

    school_rows = []
    for s in codes:
        level = levels[s] if levels[s] in "EJSVX" else "E"
        students, staff = str(rng.randint(50, 3000)), str(rng.randint(8, 200))
        for d in rng.sample("ABCDEF", rng.randint(3, 5)):
            school_rows.append(["106", s, level, students, staff, d, str(rng.randint(6, 60)), *choices(),
                                f"2017-08-{rng.randint(14, 31):02d} 10:00:00"])
    teacher_rows, ids, homes = [], [], []
    for _ in range(n_teachers):
        national_id = make_id(rng)
        school = rng.choice(codes)
        ids.append(national_id)
        homes.append(school)
        shown = national_id if rng.random() > 0.005 else national_id[:-1] + "X"
        for d in rng.sample("ABCDEF", rng.randint(2, 4)):
            teacher_rows.append(["106", shown, school, d, str(rng.randint(3, 36)), *choices(),
                                 f"2017-09-{rng.randint(4, 29):02d} 20:00:00"])
    paths = {"school": folder / "PLAN_106_school.xlsx", "teacher": folder / "PLAN_106_teacher.xlsx",
             "teacher_csv": folder / "csv" / "PLAN_106_teacher.csv"}
    write_xlsx(paths["school"], SCHOOL_PLAN.label, [f.label for f in SCHOOL_PLAN.fields], school_rows)
    write_xlsx(paths["teacher"], TEACHER_PLAN.label, [f.label for f in TEACHER_PLAN.fields], teacher_rows)
    paths["teacher_csv"].parent.mkdir(parents=True, exist_ok=True)
    with paths["teacher_csv"].open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([f.code for f in TEACHER_PLAN.fields])
        w.writerows(teacher_rows)
    return paths, len(school_rows), len(teacher_rows), ids, homes


def supply(wh: Warehouse, key: bytes, ids: list[str], homes: list[str], n_courses: int = 40_000,
           per_course: int = 50) -> int:
    """The year's courses and completed attendance, straight into the warehouse (keys: the warehouse's)."""
    keys = Pseudonymiser(key).keys(pa.array(ids)).to_pylist()
    rng = random.Random(7)
    wh.con.register("teachers", pa.table({"i": pa.array(range(len(ids)), pa.int64()), "teacher_key": keys,
                                          "school_code": homes}))
    wh.con.execute(f"""INSERT INTO main.courses (unit_code, course_code, title, organizer, organizer_type,
            county_code, start_date, end_date, hours, class_type, category, delivery, time_slot, audience,
            closed_date, is_deleted, upload_id, loaded_at, first_loaded_at)
        SELECT 'T001', 'C' || lpad(CAST(n AS VARCHAR), 7, '0'), '研習 ' || n, '某大學', '3', '63000',
               DATE '2017-08-01' + CAST(n % 360 AS INTEGER), DATE '2017-08-01' + CAST(n % 360 AS INTEGER), 6, '1',
               chr(65 + CAST(n % 6 AS INTEGER)), CAST(1 + n % 6 AS VARCHAR), CAST(1 + n % 6 AS VARCHAR), 'E;J',
               DATE '2017-08-03' + CAST(n % 360 AS INTEGER), false, 'bench', now(), now()
        FROM range({n_courses}) t(n)""")
    seed = rng.randrange(1 << 30)
    wh.con.execute(f"""INSERT INTO main.attendance (unit_code, course_code, teacher_key, school_code, hours_granted,
            completed, is_deleted, upload_id, loaded_at, first_loaded_at)
        SELECT 'T001', 'C' || lpad(CAST(c AS VARCHAR), 7, '0'), t.teacher_key, t.school_code, 6, true, false,
               'bench', now(), now()
        FROM (SELECT DISTINCT c, CAST(hash(c, k, {seed}) % {len(ids)} AS BIGINT) AS i
              FROM range({n_courses}) a(c), range({per_course}) b(k)) x JOIN teachers t USING (i)""")
    wh.con.unregister("teachers")
    return wh.con.execute("SELECT count(*) FROM main.attendance").fetchone()[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teachers", type=int, default=200_000)
    ap.add_argument("--schools", type=int, default=3_900)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-plans-"))
    try:
        t = time.perf_counter()
        paths, n_school, n_teacher, ids, homes = generate(tmp, args.schools, args.teachers)
        print(f"generated {n_school:,} school-plan rows and {n_teacher:,} teacher-plan rows "
              f"({paths['teacher'].stat().st_size / 1e6:.1f} MB .xlsx, {paths['teacher_csv'].stat().st_size / 1e6:.1f}"
              f" MB .csv) in {time.perf_counter() - t:.1f} s", flush=True)
        settings = replace(Settings.from_env(tmp / "home"), analyst_copy=False)
        plan_inbox = settings.inbox / "PLAN"
        plan_inbox.mkdir(parents=True)
        with Warehouse(settings) as wh:
            for code in ("T001", "PLAN"):
                wh.add_unit(code, "bench", "file", "production", date(2016, 1, 1))
            key = warehouse_key(settings.home, wh)
            with wh.transaction():
                n_att = supply(wh, key, ids, homes)
            school = shutil.copy(paths["school"], plan_inbox / paths["school"].name)
            assert PlanIngestor(settings, wh).ingest(Path(school), RECEIVED)["status"] == "loaded"
        print(f"supply: 40,000 courses, {n_att:,} completed attendance rows; school plans loaded", flush=True)
        raws, intakes, csv_intakes, csv_raws, pubs = [], [], [], [], []
        for k in range(args.repeat):
            t = time.perf_counter()
            reader = fastexcel.read_excel(str(paths["teacher"]))
            n = reader.load_sheet(reader.sheet_names[0]).to_arrow().num_rows
            raws.append(time.perf_counter() - t)
            # a new revision each round (the same bytes again would be a duplicate): the zip comment differs
            copy = plan_inbox / paths["teacher"].name
            shutil.copy(paths["teacher"], copy)
            with zipfile.ZipFile(copy, "a") as z:
                z.comment = f"round {k}".encode()
            t = time.perf_counter()
            with Warehouse(settings) as wh:
                receipt = PlanIngestor(settings, wh).ingest(copy, RECEIVED)
            intakes.append(time.perf_counter() - t)
            assert receipt["status"] == "loaded", receipt["refusal"]
            t = time.perf_counter()
            with paths["teacher_csv"].open("rb") as fh:
                pacsv.read_csv(fh, convert_options=pacsv.ConvertOptions(column_types={
                    c.code: pa.string() for c in TEACHER_PLAN.fields}))
            csv_raws.append(time.perf_counter() - t)
            copy = plan_inbox / paths["teacher_csv"].name
            copy.write_bytes(paths["teacher_csv"].read_bytes() + b"\n" * (k + 1))  # new bytes: a new revision
            t = time.perf_counter()
            with Warehouse(settings) as wh:
                receipt_csv = PlanIngestor(settings, wh).ingest(copy, RECEIVED)
            csv_intakes.append(time.perf_counter() - t)
            assert receipt_csv["status"] == "loaded", receipt_csv["refusal"]
            t = time.perf_counter()
            pub = publish_plans(settings, "106")
            pubs.append(time.perf_counter() - t)
        with Warehouse(settings) as wh:
            t = time.perf_counter()
            assert not checks.failing(wh.con, settings.archive_cutoff)
            gate_s = time.perf_counter() - t
            t = time.perf_counter()
            publish_snapshot(wh, replace(settings, analyst_copy=True))
            copy_s = time.perf_counter() - t
        raw, intake, craw, cintake, publish = (statistics.median(x) for x in (raws, intakes, csv_raws, csv_intakes,
                                                                              pubs))
        p = receipt["plans"]
        print(f"teacher export: {n:,} rows; accepted {p['accepted']:,}, {len(receipt['findings']):,} findings")
        print(f"raw fastexcel read of the teacher .xlsx: {raw:.2f} s (median of {args.repeat})")
        print(f"intake of the teacher .xlsx: {intake:.2f} s = {intake / raw:.2f}x raw  "
              f"(target <= {TARGETS['intake_ratio']}x)")
        print(f"raw pyarrow read of the teacher .csv: {craw:.2f} s; intake of the .csv: {cintake:.2f} s "
              f"= {cintake / craw:.2f}x raw")
        print(f"four publications: {publish:.2f} s (target <= {TARGETS['publish_s']:.0f} s), of which the blocking "
              f"checks' gate (every warehouse table scanned, as for the monthly statistics) {gate_s:.2f} s; "
              f"totals {pub.totals}")
        print(f"analysts' copy after all that (not part of the intake): {copy_s:.2f} s")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
