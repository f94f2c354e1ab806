"""inservice.inbox without Dagster: scanning, stable files, the cursor, archive/quarantine moves."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from inservice.channel import sha256_file
from inservice.config import Settings
from inservice.inbox import (
    InboxCursor,
    copies,
    data_month,
    find_upload,
    plan_tick,
    registered_units,
    scan,
    settle,
    waiting_or_refused,
)
from inservice.warehouse.backend import WarehouseUrlError

SAMPLE = Path(__file__).resolve().parents[1] / "inservice" / "sample_inbox"


def put(inbox: Path, rel: str, data: bytes = b"x", mtime_ns: int | None = None) -> Path:
    path = inbox / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


class CountingHasher:
    """The real hash, counting its calls (to prove unchanged files are not hashed again)."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, path: Path) -> str:
        self.paths.append(path.name)
        return sha256_file(path)


def receipt(status: str, month: str | None = "2017-05") -> dict:
    return {"status": status, "month": month, "received_at": "2017-06-03T10:00:00+08:00"}


def test_scan_skips_reserved_hidden_and_non_unit_folders(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    put(inbox, "T001/T001_201705.xlsx")
    put(inbox, "T001/.T001_201705.xlsx.swp")
    put(inbox, "T001/~$T001_201705.xlsx")
    put(inbox, "T001/T001_201706.xlsx.part")
    put(inbox, "_corrections/T001_201705.xlsx")
    put(inbox, "notes/readme.txt")
    put(inbox, "stray.xlsx")
    (inbox / "T002").mkdir()
    ignored: list[str] = []
    found = [f.rel for f in scan(inbox, ignored)]
    assert found == ["T001/T001_201705.xlsx"]
    assert ignored == ["notes"]
    assert list(scan(tmp_path / "missing")) == []


def test_a_file_is_handed_on_once_when_stable(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    put(inbox, "T001/T001_201705.xlsx", b"one", 1_000_000_000)
    put(inbox, "T002/T002_201705.xml", b"two", 2_000_000_000)
    hasher = CountingHasher()
    first = plan_tick(inbox, InboxCursor(), hasher=hasher)
    assert first.uploads == [] and first.waiting == 2 and hasher.paths == []  # new: wait a tick
    second = plan_tick(inbox, InboxCursor.from_json(first.cursor.to_json()), hasher=hasher)
    assert [u.file.rel for u in second.uploads] == ["T001/T001_201705.xlsx", "T002/T002_201705.xml"]  # oldest first
    assert second.uploads[0].run_key == f"T001/T001_201705.xlsx/{sha256_file(inbox / 'T001/T001_201705.xlsx')}"
    assert second.uploads[0].received_at.endswith("+08:00")
    # the next tick, and a tick after reloading the cursor from JSON, hand on nothing and hash nothing
    third = plan_tick(inbox, second.cursor, hasher=hasher)
    reloaded = plan_tick(inbox, InboxCursor.from_json(second.cursor.to_json()), hasher=hasher)
    assert third.uploads == [] and reloaded.uploads == []
    assert hasher.paths == ["T001_201705.xlsx", "T002_201705.xml"]


def test_a_changing_file_waits_and_new_bytes_are_a_new_upload(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    path = put(inbox, "T001/T001_201705.xlsx", b"partial", 1_000_000_000)
    cursor = plan_tick(inbox, InboxCursor()).cursor
    path.write_bytes(b"partial, still copying")  # size and mtime change between ticks
    plan = plan_tick(inbox, cursor)
    assert plan.uploads == [] and plan.waiting == 1
    handed = plan_tick(inbox, plan.cursor)
    [upload] = handed.uploads
    assert upload.content_hash == sha256_file(path)
    # touched but same bytes: waits a tick, then comes back with the same run key (Dagster dedupes it)
    os.utime(path, ns=(5_000_000_000, 5_000_000_000))
    cursor = plan_tick(inbox, handed.cursor).cursor
    again = plan_tick(inbox, cursor)
    assert [u.run_key for u in again.uploads] == [upload.run_key]
    cursor = again.cursor
    # a corrected re-send under the same name is new content: a new run key
    path.write_bytes(b"corrected upload")
    cursor = plan_tick(inbox, cursor).cursor
    [corrected] = plan_tick(inbox, cursor).uploads
    assert corrected.run_key != upload.run_key


def test_cap_per_tick_and_already_done(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    for i in range(5):
        put(inbox, f"T001/T001_2017{i + 1:02d}.xlsx", bytes([i]), 1_000_000_000 + i)
    cursor = plan_tick(inbox, InboxCursor()).cursor
    hasher = CountingHasher()
    plan = plan_tick(inbox, cursor, max_uploads=2, hasher=hasher)
    assert [u.file.name for u in plan.uploads] == ["T001_201701.xlsx", "T001_201702.xlsx"]
    assert plan.deferred == 3 and len(hasher.paths) == 2  # files over the cap are not even hashed
    skip = {"T001_201703.xlsx"}
    plan = plan_tick(inbox, plan.cursor, max_uploads=2, hasher=hasher,
                     already_done=lambda u: u.file.name in skip)
    # a dropped re-copy takes no place under the cap
    assert [u.file.name for u in plan.uploads] == ["T001_201704.xlsx", "T001_201705.xlsx"]
    assert plan_tick(inbox, plan.cursor, max_uploads=2).uploads == []
    # files gone from the inbox leave the cursor
    shutil.rmtree(inbox / "T001")
    assert plan_tick(inbox, plan.cursor).cursor.files == {}


def test_unknown_cursor_layout_starts_afresh() -> None:
    assert InboxCursor.from_json('{"v": 99, "files": {"a": 1}}').files == {}
    assert InboxCursor.from_json(None).files == {}


def test_data_month_uses_the_core_file_name_rule() -> None:
    assert data_month("T001_201705.xlsx") == "2017-05"
    assert data_month("T001_201705_2.xml") == "2017-05"
    assert data_month("T001-201705.xlsx") is None
    assert data_month("T001_201713.xlsx") is None
    assert data_month("T001_201705.csv") is None


def test_settle_moves_originals_and_never_overwrites(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    first = put(settings.inbox, "T001/T001_201705.xlsx", b"v1")
    archived = settle(settings, "T001", first, receipt("loaded"))
    assert archived == tmp_path / "archive/T001/201705/T001_201705.xlsx" and archived.read_bytes() == b"v1"
    assert not first.exists()
    # a corrected re-send with the same name: both kept, each under its own name
    second = put(settings.inbox, "T001/T001_201705.xlsx", b"v2")
    kept = settle(settings, "T001", second, receipt("duplicate"))
    assert kept == tmp_path / "archive/T001/201705/20170603T100000/T001_201705.xlsx"
    assert archived.read_bytes() == b"v1" and kept.read_bytes() == b"v2"
    third = put(settings.inbox, "T001/T001_201705.xlsx", b"v3")
    assert settle(settings, "T001", third, receipt("loaded")).parent.name == "20170603T100000-2"
    # refused: quarantine; an archived original stays archived whatever a re-run says
    bad = put(settings.inbox, "T001/T001-201705.xlsx", b"bad")
    assert settle(settings, "T001", bad, receipt("refused", None)) == tmp_path / "quarantine/T001/T001-201705.xlsx"
    assert settle(settings, "T001", archived, receipt("refused")) == archived
    # quarantined, then processed on a re-run: to the archive
    q = put(tmp_path, "quarantine/T002/T002_201705.xlsx", b"q")
    assert settle(settings, "T002", q, receipt("loaded")) == tmp_path / "archive/T002/201705/T002_201705.xlsx"
    # a self-check moves nothing
    c = put(settings.inbox, "T003/T003_201705.xlsx")
    assert settle(settings, "T003", c, receipt("checked")) == c


def test_find_upload_prefers_the_inbox_then_the_newest_kept_copy(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    old = put(tmp_path, "quarantine/T001/T001_201705.xlsx", b"old", 1_000_000_000)
    new = put(tmp_path, "archive/T001/201705/T001_201705.xlsx", b"new", 2_000_000_000)
    assert copies(settings, "T001", "T001_201705.xlsx") == [new, old]
    assert find_upload(settings, "T001", "T001_201705.xlsx") == new
    assert find_upload(settings, "T001", "T001_201705.xlsx", sha256_file(old)) == old
    assert find_upload(settings, "T001", "T001_201705.xlsx", "0" * 64) is None
    waiting = put(settings.inbox, "T001/T001_201705.xlsx", b"waiting")
    assert find_upload(settings, "T001", "T001_201705.xlsx") == waiting
    assert find_upload(settings, "T002", "T001_201705.xlsx") is None


def test_waiting_or_refused_lists_a_partition_s_unloaded_files(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    put(tmp_path, "archive/T001/201705/T001_201705.xlsx")  # loaded: not listed
    q = put(tmp_path, "quarantine/T001/T001_201705_2.xlsx", b"q", 1_000_000_000)
    q_newer = put(tmp_path, "quarantine/T001/20170603T100000/T001_201705_2.xlsx", b"q2", 2_000_000_000)
    w = put(settings.inbox, "T001/T001_201705_3.xml")
    put(settings.inbox, "T001/T001_201706.xml")  # another month
    assert waiting_or_refused(settings, "T001", "2017-05") == [q_newer, w]
    assert q.exists()
    assert waiting_or_refused(settings, "T002", "2017-05") == []


def test_sample_inbox_scans_as_three_units(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    shutil.copytree(SAMPLE, inbox)
    assert sorted(f.unit for f in scan(inbox)) == ["T001", "T002", "T003"]


def test_an_identical_resend_gets_its_f08_receipt_and_goes_to_the_archive(settings: Settings) -> None:
    """What a Dagster run does with a re-copy of bytes already processed, in the core alone:
    `Ingestor.ingest` answers F08 with a receipt of its own in outbox/<unit>/ and records it;
    `settle` moves the copy to archive/<unit>/<YYYYMM>/ beside the first, never over it."""
    import json

    from inservice.ingest import Ingestor
    from inservice.warehouse.store import Warehouse
    from tests.builders import course, write_xlsx

    first = write_xlsx(settings.inbox / "T001" / "T001_201705.xlsx", [course("C1")], [])
    data = first.read_bytes()
    with Warehouse(settings) as wh:
        ingestor = Ingestor(settings, wh)
        loaded = ingestor.ingest(first, "2017-06-03T10:00:00+08:00", unit="T001")
        archived = settle(settings, "T001", first, loaded)
        again = put(settings.inbox, "T001/T001_201705.xlsx", data)
        dup = ingestor.ingest(again, "2017-06-04T09:00:00+08:00", unit="T001")
        moved = settle(settings, "T001", again, dup)
        rows = wh.con.execute("SELECT status FROM uploads ORDER BY processed_at").fetchall()
    assert loaded["status"] == "loaded" and archived == settings.home / "archive/T001/201705/T001_201705.xlsx"
    assert (dup["status"], dup["refusal"]) == ("duplicate", "F08")
    assert loaded["upload_id"] in dup["findings"][0]["message_en"]
    json_path = Path(dup["receipt_files"][0])
    assert json_path.parent == settings.outbox / "T001" and json_path != Path(loaded["receipt_files"][0])
    assert json.loads(json_path.read_text(encoding="utf-8"))["status"] == "duplicate"
    assert Path(dup["receipt_files"][1]).stat().st_size
    assert moved == settings.home / "archive/T001/201705/20170604T090000/T001_201705.xlsx"
    assert moved.read_bytes() == data and archived.read_bytes() == data
    assert not any((settings.inbox / "T001").iterdir())
    assert rows == [("loaded",), ("duplicate",)]


def test_the_register_is_none_only_while_the_warehouse_is_busy_or_out_of_reach(settings: Settings) -> None:
    """A sensor looks again next tick when the warehouse cannot be read *now*; a damaged warehouse or
    a wrong URL is not "now": it surfaces, for a person to fix."""
    assert registered_units(settings) == {"T001", "T002", "T003"}
    holder = subprocess.Popen(  # another process writing: DuckDB admits one
        [sys.executable, "-c", "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); "
         "print('held', flush=True); time.sleep(60)", str(settings.warehouse_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert registered_units(settings) is None
    finally:
        holder.kill()
        holder.wait()
    assert registered_units(replace(settings, warehouse="postgresql://postgres@127.0.0.1:1/none")) is None
    damaged = settings.home / "damaged.duckdb"
    damaged.write_bytes(b"not a database" * 100)
    with pytest.raises(Exception, match="not a valid DuckDB database"):
        registered_units(replace(settings, warehouse=f"duckdb://{damaged}"))
    with pytest.raises(WarehouseUrlError):
        registered_units(replace(settings, warehouse="mysql://somewhere/db"))
