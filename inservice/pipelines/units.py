"""The unit register, from the UI instead of a terminal (Launchpad; each config field described in
Chinese and English): register a unit, change its state with a letter number, add an archive-cutoff
exception. Each op calls the same core function as the CLI.
"""

# No `from __future__ import annotations`: Dagster reads config/resource annotations at runtime.

from datetime import date
from typing import Any

import dagster as dg
from pydantic import Field

from inservice.assets.shared import WAREHOUSE_POOL, InserviceResource, refused
from inservice.assets.uploads import UNIT_KEYS
from inservice.corrections.lifecycle import set_state
from inservice.registers import units as unit_register
from inservice.schemas.plans import PLAN_UNIT
from inservice.warehouse.store import CHANNELS, UNIT_STATES, WarehouseError

_LETTER = "核定文號，例 臺教師(三)字第1060000001號 / the approval letter number"


class RegisterUnitConfig(dg.Config):
    code: str = Field(description="單位代碼（大寫英數 4–10 碼，首字為字母），例 T004 / unit code, e.g. T004")
    name: str = Field(description="單位名稱 / the unit's name")
    channel: str = Field(default="file", description=f"傳報方式 {CHANNELS}：file 檔案、db 資料庫互傳 / channel")
    state: str = Field(default="testing", description=f"狀態 {UNIT_STATES}；新加入單位為 testing / state")
    joined: str = Field(default="", description="加入日期 YYYY-MM-DD；空白＝今天 / join date; empty = today")
    county: str = Field(default="", description="所屬縣市代碼，例 10016 澎湖縣（縣市匯出依此） / the unit's county")


@dg.op(pool=WAREHOUSE_POOL, description="登錄傳報單位 Registers a partner unit (as `inservice units add`).")
def register_unit(context: dg.OpExecutionContext, config: RegisterUnitConfig, inservice: InserviceResource) -> None:
    joined = date.fromisoformat(config.joined) if config.joined else date.today()
    try:
        with inservice.warehouse() as wh:
            wh.add_unit(config.code, config.name, config.channel, config.state, joined, county=config.county or None,
                        by="dagster")
    except (WarehouseError, ValueError) as exc:
        raise refused(exc) from exc
    if config.code != PLAN_UNIT:  # the planning service's exports have the school-year partitions instead
        context.instance.add_dynamic_partitions(UNIT_KEYS, [config.code])  # its inbox is a partition now
    context.log.info(f"unit {config.code} registered ({config.state}, {config.channel})")


@dg.job(name="staff_register_unit", tags={"inservice/staff": "register"},
        description="登錄傳報單位：單位代碼、名稱、傳報方式、狀態、加入日期。Registers a partner unit; its inbox "
                    "folder becomes a partition of partner_upload.")
def register_unit_job() -> None:
    register_unit()


class UnitStateConfig(dg.Config):
    code: str = Field(description="單位代碼 / unit code")
    state: str = Field(description="新狀態 testing／production／sealed（testing→production 轉正式；→sealed 封存；"
                                   "sealed→testing 重新申請） / new state")
    letter: str = Field(description=_LETTER)


@dg.op(pool=WAREHOUSE_POOL, description="變更單位狀態 Changes a unit's state with its letter (logged).")
def change_unit_state(context: dg.OpExecutionContext, config: UnitStateConfig, inservice: InserviceResource) -> None:
    try:
        with inservice.warehouse() as wh:
            reason = set_state(wh, config.code, config.state, config.letter)
    except (WarehouseError, ValueError) as exc:
        raise refused(exc) from exc
    context.log.info(f"unit {config.code} → {config.state} ({reason}), letter {config.letter}")


@dg.job(name="staff_change_unit_state", tags={"inservice/staff": "unit_state"},
        description="變更單位狀態（須核定文號，記入狀態紀錄）。Promote, seal or re-admit a unit; the change and its "
                    "letter go to the unit state log.")
def change_unit_state_job() -> None:
    change_unit_state()


class UnitRegisterConfig(dg.Config):
    code: str = Field(description="單位代碼 / unit code")
    field: str = Field(description="異動項目：name 更名、operator 移轉經營、channel 管道（file／db）、county_code 縣市 "
                                   "/ what changes")
    value: str = Field(description="新內容（名稱、經營機關、file 或 db、縣市代碼） / the new value")
    letter: str = Field(description=_LETTER)
    effective_date: str = Field(default="", description="生效日期 YYYY-MM-DD；空白＝今天（過去月份之統計保留原內容）"
                                                        " / the day it takes effect; empty = today")


@dg.op(pool=WAREHOUSE_POOL, description="單位名冊異動 Renames a unit, hands it over, changes its channel or county "
                                        "(as `inservice units rename|handover|set-channel|set-county`; logged).")
def change_unit_register(context: dg.OpExecutionContext, config: UnitRegisterConfig,
                         inservice: InserviceResource) -> None:
    try:
        effective = date.fromisoformat(config.effective_date) if config.effective_date else None
        with inservice.warehouse() as wh:
            change = unit_register.change(wh, config.code, config.field, config.value, config.letter, effective,
                                          by="dagster")
    except (WarehouseError, ValueError) as exc:
        raise refused(exc) from exc
    context.log.info(f"unit {change.unit_code}: {change.field} {change.old!r} → {change.new!r} from "
                     f"{change.effective} (letter {change.letter})")


@dg.job(name="staff_change_unit_register", tags={"inservice/staff": "unit_register"},
        description="單位名冊異動（更名、移轉經營、變更傳報方式或縣市；須核定文號及生效日期，記入狀態紀錄）。"
                    "A unit's name, operator, channel or county from a date; past months keep the old values.")
def change_unit_register_job() -> None:
    change_unit_register()


class ArchiveExceptionConfig(dg.Config):
    unit: str = Field(description="單位代碼 / unit code")
    course: str = Field(default="all", description="研習代碼，或 all＝該單位全部課程 / a course code, or all")
    letter: str = Field(description=_LETTER)
    letter_date: str = Field(description="核定日期 YYYY-MM-DD（自此日起生效） / letter date (in force from)")
    valid_until: str = Field(description="有效期限 YYYY-MM-DD（含） / valid until (inclusive)")


@dg.op(pool=WAREHOUSE_POOL, description="登錄封存例外 Registers an archive-cutoff exception (C07).")
def add_archive_exception(context: dg.OpExecutionContext, config: ArchiveExceptionConfig,
                          inservice: InserviceResource) -> None:
    course = None if config.course.strip().lower() in ("", "all", "*") else config.course.strip()
    try:
        with inservice.warehouse() as wh:
            if wh.unit(config.unit) is None:
                raise WarehouseError(f"unit {config.unit} is not registered")
            new_id = wh.add_exception(config.unit, course, config.letter, date.fromisoformat(config.letter_date),
                                      date.fromisoformat(config.valid_until))
    except (WarehouseError, ValueError) as exc:
        raise refused(exc) from exc
    context.log.info(f"exception {new_id} registered for {config.unit} ({course or 'all courses'}); re-run the "
                     f"refused upload (ingest_upload, rerun: true) to load what it now admits")


@dg.job(name="staff_add_archive_exception", tags={"inservice/staff": "exception"},
        description="登錄封存例外（核定函）。Registers an archive-cutoff exception; then re-run the upload "
                    "refused C07 with rerun: true.")
def add_archive_exception_job() -> None:
    add_archive_exception()


UNIT_JOBS: list[Any] = [register_unit_job, change_unit_state_job, change_unit_register_job,
                        add_archive_exception_job]
