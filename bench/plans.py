"""The planning survey at national size: one school year generated, ingested and published.

Generates school year 106 as the planning service exports it — 3,900 schools × ~4 domains (school
plans) and 200,000 teachers × ~3 domains (teacher plans, ~600,000 rows, the IDs with their check
digits, ~0.5% invalid) — as .xlsx (and the teacher export also as .csv, a revision of it: 5% of the
rows plan other hours), plus the year's supply straight into the warehouse (40,000 courses,
~2,000,000 completed attendance rows of the same teachers, pseudonymised with the warehouse's key so
plans and attendance join). Then, in the same run, `--repeat` times each:
  raw      — fastexcel reading the teacher export's sheet into Arrow (the reader the loader uses);
  intake   — `PlanIngestor.ingest` of that export between opening and closing the warehouse, as
             `inservice ingest` does: checks, read in the child process, every P-rule, the revision's
             merge in one transaction, the JSON + Excel receipts (the analysts' copy is timed apart:
             it grows with the whole warehouse, not with the export); its CPU time beside the raw
             read's (this process, its threads and the reader's child: less at the mercy of the load);
  publish  — `publish_plans`: the four publications (stat_plan_* tables, four workbooks, four pages),
             split into the blocking checks' gate (BLOCKING, shared with the monthly statistics, and
             PLAN_BLOCKING, the plan tables' keys), each check timed as the gate runs it, and the
             publications' own work (the rest).
Each round alternates the .xlsx and the .csv revision, so every load changes 5% of the rows (what a
revision moves to the history). Prints each round with the machine's load, then the medians and the
ratios (targets: intake ≤ 1.5× raw; publications ≤ 15 s).

Measured here (2026-12-07, 2 cores shared with other sessions; `--repeat 3`): see README, Planning
survey. Usage: python bench/plans.py [--teachers 200000] [--schools 3900] [--repeat 3] [--keep]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import resource
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
from ingest_common import make_id

from inservice.config import Settings
from inservice.plans.intake import PlanIngestor
from inservice.plans.publish import publish_plans
from inservice.schemas.plans import SCHOOL_PLAN, TEACHER_PLAN
from inservice.schemas.reference import schools
from inservice.validations.pseudonym import Pseudonymiser, warehouse_key
from inservice.warehouse import checks, ddl
from inservice.warehouse.analyst import publish_snapshot
from inservice.warehouse.store import Warehouse

TARGETS = {"intake_ratio": 1.5, "publish_s": 15.0}
RECEIVED = "2017-10-02T10:00:00+08:00"
REVISED = 0.05  # share of the teacher rows the .csv export changes against the .xlsx one


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
    # the .csv is a revision of the .xlsx: 5% of the rows plan other hours, so each load changes rows
    revised = [[*r[:4], str(int(r[4]) % 36 + 1), *r[5:]] if rng.random() < REVISED else r for r in teacher_rows]
    with paths["teacher_csv"].open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([f.code for f in TEACHER_PLAN.fields])
        w.writerows(revised)
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


def _cpu() -> float:
    """CPU seconds of this process, its threads and its finished children (the intake's reader)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _time_the_gate() -> dict[str, float]:
    """Each blocking check timed as the gate runs it (the publication's time split: gate vs own work)."""
    seconds: dict[str, float] = {}

    def timed(check: checks.BlockingCheck) -> checks.BlockingCheck:
        def run(con, cutoff, scope=None):  # noqa: ANN001, ANN202
            t, c = time.perf_counter(), _cpu()
            try:
                return check.run(con, cutoff, scope)
            finally:
                seconds[check.key] = seconds.get(check.key, 0.0) + time.perf_counter() - t
                seconds["cpu"] = seconds.get("cpu", 0.0) + _cpu() - c
        return replace(check, run=run)

    checks.BLOCKING[:] = [timed(c) for c in checks.BLOCKING]
    checks.PLAN_BLOCKING[:] = [timed(c) for c in checks.PLAN_BLOCKING]
    gate = checks.require_passing

    def whole(con, cutoff, what):  # noqa: ANN001, ANN202 - the gate with what it reads and records
        t = time.perf_counter()
        try:
            return gate(con, cutoff, what)
        finally:
            seconds["whole_gate"] = seconds.get("whole_gate", 0.0) + time.perf_counter() - t
    checks.require_passing = whole
    return seconds


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
        gate = _time_the_gate()
        m: dict[str, list[float]] = {k: [] for k in ("raw", "raw_cpu", "intake", "intake_cpu", "csv_raw",
                                                     "csv_intake", "publish", "gate", "plan_gate", "load",
                                                     "publish_cpu", "gate_cpu")}
        for k in range(args.repeat):
            m["load"].append(os.getloadavg()[0])
            t, c = time.perf_counter(), _cpu()
            reader = fastexcel.read_excel(str(paths["teacher"]))
            n = reader.load_sheet(reader.sheet_names[0]).to_arrow().num_rows
            m["raw"].append(time.perf_counter() - t)
            m["raw_cpu"].append(_cpu() - c)
            # a new revision each round (the same bytes again would be a duplicate): the zip comment differs
            copy = plan_inbox / paths["teacher"].name
            shutil.copy(paths["teacher"], copy)
            with zipfile.ZipFile(copy, "a") as z:
                z.comment = f"round {k}".encode()
            t, c = time.perf_counter(), _cpu()
            with Warehouse(settings) as wh:
                receipt = PlanIngestor(settings, wh).ingest(copy, RECEIVED)
            m["intake"].append(time.perf_counter() - t)
            m["intake_cpu"].append(_cpu() - c)
            assert receipt["status"] == "loaded", receipt["refusal"]
            t = time.perf_counter()
            with paths["teacher_csv"].open("rb") as fh:
                pacsv.read_csv(fh, convert_options=pacsv.ConvertOptions(column_types={
                    c.code: pa.string() for c in TEACHER_PLAN.fields}))
            m["csv_raw"].append(time.perf_counter() - t)
            copy = plan_inbox / paths["teacher_csv"].name
            copy.write_bytes(paths["teacher_csv"].read_bytes() + b"\n" * (k + 1))  # new bytes: a new revision
            t = time.perf_counter()
            with Warehouse(settings) as wh:
                receipt_csv = PlanIngestor(settings, wh).ingest(copy, RECEIVED)
            m["csv_intake"].append(time.perf_counter() - t)
            assert receipt_csv["status"] == "loaded", receipt_csv["refusal"]
            gate.clear()
            t, c = time.perf_counter(), _cpu()
            pub = publish_plans(settings, "106")
            m["publish"].append(time.perf_counter() - t)
            m["publish_cpu"].append(_cpu() - c)
            m["gate_cpu"].append(gate.pop("cpu"))
            whole = gate.pop("whole_gate")  # the checks plus what the gate reads and records around them
            m["plan_gate"].append(sum(v for key, v in gate.items() if key.startswith("plan_tables.")))
            m["gate"].append(whole - m["plan_gate"][-1])
            print(f"round {k + 1}: load {m['load'][-1]:.1f}; raw {m['raw'][-1]:.2f} s, intake {m['intake'][-1]:.2f} s "
                  f"({m['intake'][-1] / m['raw'][-1]:.2f}x); publications {m['publish'][-1]:.2f} s, of which gate "
                  f"{m['gate'][-1] + m['plan_gate'][-1]:.2f} s", flush=True)
        slowest = sorted(gate.items(), key=lambda kv: -kv[1])[:3]
        with Warehouse(settings) as wh:
            t = time.perf_counter()
            checks.raw_national_ids(wh.con, [f"main.{t.name}" for t in ddl.PLAN_TABLES])
            plan_scan = time.perf_counter() - t
            history = wh.con.execute("SELECT count(*) FROM main.teacher_plans_history").fetchall()[0][0]
            t = time.perf_counter()
            publish_snapshot(wh, replace(settings, analyst_copy=True))
            copy_s = time.perf_counter() - t
        med = {k: statistics.median(v) for k, v in m.items()}
        own = statistics.median(p - g - pg for p, g, pg in zip(m["publish"], m["gate"], m["plan_gate"], strict=True))
        p = receipt["plans"]
        load = f"load {min(m['load']):.1f}-{max(m['load']):.1f} (1-min average at each round's start; 2 cores)"
        print(f"teacher export: {n:,} rows; accepted {p['accepted']:,}, {len(receipt['findings']):,} findings; "
              f"{REVISED:.0%} of the rows change between the .xlsx and .csv revisions "
              f"(history now {history:,} rows); {load}")
        print(f"raw fastexcel read of the teacher .xlsx: {med['raw']:.2f} s (median of {args.repeat}; "
              f"CPU {med['raw_cpu']:.2f} s)")
        print(f"intake of the teacher .xlsx: {med['intake']:.2f} s = {med['intake'] / med['raw']:.2f}x raw  "
              f"(target <= {TARGETS['intake_ratio']}x); CPU {med['intake_cpu']:.2f} s = "
              f"{med['intake_cpu'] / med['raw_cpu']:.2f}x raw's CPU")
        print(f"raw pyarrow read of the teacher .csv: {med['csv_raw']:.2f} s; intake of the .csv: "
              f"{med['csv_intake']:.2f} s = {med['csv_intake'] / med['csv_raw']:.2f}x raw")
        print(f"four publications: {med['publish']:.2f} s (target <= {TARGETS['publish_s']:.0f} s) = the blocking "
              f"checks' gate {med['gate']:.2f} s (BLOCKING: attendance, courses, upload_log; slowest "
              + ", ".join(f"{key} {v:.2f} s" for key, v in slowest)
              + f") + PLAN_BLOCKING {med['plan_gate']:.2f} s + the publications' own work {own:.2f} s; "
              f"totals {pub.totals}")
        own_cpu = statistics.median(p - g for p, g in zip(m["publish_cpu"], m["gate_cpu"], strict=True))
        print(f"  CPU: publications {med['publish_cpu']:.2f} s = gate {med['gate_cpu']:.2f} s "
              f"+ own work {own_cpu:.2f} s")
        print(f"of the gate, upload_log.no_national_id's scan of the plan tables: {plan_scan:.2f} s")
        print(f"analysts' copy after all that (not part of the intake): {copy_s:.2f} s")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
