"""Corrections to closed courses (修改已結案課程內容申請表, spec §6), unit lifecycle and history.

workbook.py   reads a correction workbook (fastexcel, headers matched like uploads)
apply.py      decides each row, writes the accepted ones in one transaction, writes the receipt
lifecycle.py  unit states (testing → production → sealed → testing) with their letters; sealing
history.py    a course and its attendance as they stood on a date (from `history`)
cli.py        `inservice corrections …`, `inservice history …`, `inservice units set-state|seal-dormant`
"""
