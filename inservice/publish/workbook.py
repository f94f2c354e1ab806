"""Formatted Excel workbooks (openpyxl) of reports: one sheet per table, Chinese titles, totals rows,
frozen headers, widths from the content, native charts, and a notes sheet."""

from __future__ import annotations

from copy import copy
from pathlib import Path

from openpyxl import Workbook
from openpyxl.cell import Cell
from openpyxl.chart import BarChart, LineChart, Reference
from openpyxl.styles import Alignment, Border, Font, NamedStyle, PatternFill, Side
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from inservice.publish.common import LIGHT_GREEN, LIGHT_RED, LIGHT_YELLOW, Report, display_width, fmt_value

FONT = "微軟正黑體"  # Excel on Windows; other systems substitute their own CJK font
NUMBER_FORMATS = {"int": "#,##0", "dec1": "#,##0.0", "dec2": "#,##0.00", "date": "yyyy-mm-dd"}
LIGHT_FILLS = {LIGHT_GREEN: "C6EFCE", LIGHT_YELLOW: "FFEB9C", LIGHT_RED: "FFC7CE"}
HEADER_FILL = PatternFill("solid", fgColor="DDEBF7")
TOTAL_FILL = PatternFill("solid", fgColor="F2F2F2")
THIN = Side(style="thin", color="999999")
BOX = Border(left=THIN, right=THIN, top=THIN, bottom=THIN)


class _Styles:
    """Named styles, registered once per workbook: a cell then takes a style by name, which is far
    cheaper than assigning font/fill/border objects cell by cell (openpyxl hashes each of those)."""

    def __init__(self, wb: Workbook) -> None:
        self.wb = wb
        self.arrays: dict[str, object] = {}  # name → the style array a cell of that style carries

    def _add(self, name: str, **attrs: object) -> str:
        if name not in self.arrays:
            style = NamedStyle(name=name, **attrs)
            self.wb.add_named_style(style)
            self.arrays[name] = style.as_tuple()
        return name

    def cell(self, kind: str, total: bool, light: str | None = None) -> str:
        name = f"pub-{kind}{'-total' if total else ''}{'-' + LIGHT_FILLS[light] if light in LIGHT_FILLS else ''}"
        if name in self.arrays:
            return name
        fill = (PatternFill("solid", fgColor=LIGHT_FILLS[light]) if light in LIGHT_FILLS
                else TOTAL_FILL if total else PatternFill())
        return self._add(name, font=Font(name=FONT, bold=total), border=BOX, fill=fill,
                         number_format=NUMBER_FORMATS.get(kind, "General"),
                         alignment=Alignment(horizontal="center") if kind == "light" else Alignment())

    def header(self) -> str:
        return self._add("pub-header", font=Font(name=FONT, bold=True), fill=HEADER_FILL, border=BOX,
                         alignment=Alignment(horizontal="center", vertical="center", wrap_text=True))

    def title(self) -> str:
        return self._add("pub-title", font=Font(name=FONT, bold=True, size=14))

    def small(self) -> str:
        return self._add("pub-small", font=Font(name=FONT, size=9, color="555555"))


def _sheet_title(name: str, used: set[str]) -> str:
    for ch in "[]:*?/\\":
        name = name.replace(ch, " ")
    name = name[:31]
    base, n = name, 2
    while name in used:
        suffix = f" ({n})"
        name = base[:31 - len(suffix)] + suffix
        n += 1
    used.add(name)
    return name


def _write_report(ws: Worksheet, rep: Report, doc_title: str, subtitle: str, st: _Styles) -> None:
    ncols = max(len(rep.columns), 1)
    ws["A1"] = rep.title
    ws["A1"].style = st.title()
    ws["A2"] = f"{doc_title}・{subtitle}"
    ws["A2"].style = st.small()
    ws.merge_cells(start_row=1, start_column=1, end_row=1, end_column=ncols)
    ws.merge_cells(start_row=2, start_column=1, end_row=2, end_column=ncols)
    row = 3
    widths = [display_width(c.label) + 2 for c in rep.columns]
    header = st.header()
    if any(c.group for c in rep.columns):
        # spanning group headers over consecutive columns of the same group
        i = 0
        while i < len(rep.columns):
            j = i
            while j + 1 < len(rep.columns) and rep.columns[j + 1].group == rep.columns[i].group:
                j += 1
            cell = ws.cell(row=row, column=i + 1, value=rep.columns[i].group or "")
            for k in range(i, j + 1):
                ws.cell(row=row, column=k + 1).style = header
            if j > i:
                ws.merge_cells(start_row=row, start_column=i + 1, end_row=row, end_column=j + 1)
            elif not rep.columns[i].group:  # an ungrouped column: its header spans both header rows
                ws.cell(row=row + 1, column=i + 1).style = header
                ws.merge_cells(start_row=row, start_column=i + 1, end_row=row + 1, end_column=i + 1)
                cell.value = rep.columns[i].label
            i = j + 1
        row += 1
    for i, col in enumerate(rep.columns, start=1):
        c = ws.cell(row=row, column=i)
        if c.coordinate not in ws.merged_cells:
            c.value = col.label
            c.style = header
    header_row = row
    first_data = row + 1
    total_from = len(rep.rows) - rep.total_rows
    plain = [st.arrays[st.cell(col.kind, False)] for col in rep.columns]
    bold = [st.arrays[st.cell(col.kind, True)] for col in rep.columns]
    lights = [i for i, col in enumerate(rep.columns) if col.kind == "light"]
    for n, values in enumerate(rep.rows):
        # whole rows of cells built with their style array: per-cell style assignment is the slow path
        arrays = bold if n >= total_from else plain
        cells = [Cell(ws, value=v, style_array=copy(a)) for v, a in zip(values, arrays, strict=True)]
        for i in lights:
            cells[i] = Cell(ws, value=values[i],
                            style_array=copy(st.arrays[st.cell("light", n >= total_from, values[i])]))
        ws.append(cells)
    # widths from the headers, the first rows and the totals (enough to size a column)
    sample = rep.rows[:500] + rep.rows[max(total_from, 500):]
    for values in sample:
        for i, (col, value) in enumerate(zip(rep.columns, values, strict=True)):
            widths[i] = max(widths[i], display_width(fmt_value(value, col.kind)) + 2)
    for i, w in enumerate(widths, start=1):
        ws.column_dimensions[get_column_letter(i)].width = min(max(w, 8), 60)
    ws.freeze_panes = ws.cell(row=header_row + 1, column=2)  # headers and the row labels stay visible
    last = first_data + len(rep.rows) - 1
    note_row = max(last, header_row) + 2
    for note in rep.notes:
        ws.cell(row=note_row, column=1, value=f"註：{note}").style = st.small()
        note_row += 1
    ws.page_setup.orientation = "landscape"
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.page_setup.fitToWidth, ws.page_setup.fitToHeight = 1, 0
    ws.print_title_rows = f"1:{header_row}"
    if rep.chart and rep.rows:
        _add_chart(ws, rep, header_row, first_data, last, note_row + 1)


def _add_chart(ws: Worksheet, rep: Report, header_row: int, first: int, last: int, anchor_row: int) -> None:
    spec = rep.chart
    if spec is None:  # the caller asks only for a report with a chart
        return
    cats = Reference(ws, min_col=spec.category + 1, min_row=first, max_row=last)
    bars = BarChart()
    bars.type = "col"
    bars.title = spec.title
    for col in spec.bars:
        bars.add_data(Reference(ws, min_col=col + 1, min_row=header_row, max_row=last), titles_from_data=True)
    bars.set_categories(cats)
    bars.y_axis.title = spec.bar_axis
    bars.y_axis.majorGridlines = None
    bars.x_axis.tickLblSkip = 3
    # openpyxl ≥ 3.1 leaves <c:delete> unset and Excel then hides the axes
    bars.x_axis.delete = False
    bars.y_axis.delete = False
    if spec.lines:
        line = LineChart()
        for col in spec.lines:
            line.add_data(Reference(ws, min_col=col + 1, min_row=header_row, max_row=last), titles_from_data=True)
        line.y_axis.axId = 200  # second value axis, on the right
        line.y_axis.title = spec.line_axis
        line.y_axis.crosses = "max"
        line.y_axis.delete = False
        bars += line
    bars.width, bars.height = 26, 10
    bars.legend.position = "b"
    ws.add_chart(bars, f"A{anchor_row}")


def write_workbook(path: Path, reports: list[Report], doc_title: str, subtitle: str,
                   notes: list[tuple[str, str]], notes_title: str = "說明") -> Path:
    wb = Workbook()
    wb.remove(wb.active)
    wb.properties.title = doc_title
    wb.properties.creator = "inservice-etl"
    used: set[str] = set()
    st = _Styles(wb)
    for rep in reports:
        _write_report(wb.create_sheet(_sheet_title(rep.sheet, used)), rep, doc_title, subtitle, st)
    ws = wb.create_sheet(_sheet_title(notes_title, used))
    ws["A1"] = f"{doc_title} — {notes_title}"
    ws["A1"].style = st.title()
    ws["A2"] = subtitle
    ws["A2"].style = st.small()
    for i, (term, text) in enumerate(notes, start=4):
        ws.cell(row=i, column=1, value=term).font = Font(name=FONT, bold=True)
        c = ws.cell(row=i, column=2, value=text)
        c.font = Font(name=FONT)
        c.alignment = Alignment(wrap_text=True, vertical="top")
    ws.column_dimensions["A"].width = 22
    ws.column_dimensions["B"].width = 100
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    wb.save(tmp)
    tmp.replace(path)  # readers never see a half-written workbook
    return path
