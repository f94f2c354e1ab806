"""Code lists of spec §3, with their labels. A value matches a code, or any of its labels.

Matching is done on a folded key: full-width folded (NFKC), upper-cased, 台 → 臺, brackets and
spaces removed. Legacy county codes (and names) map to their successors.
"""

from __future__ import annotations

import csv
import unicodedata
from dataclasses import dataclass
from datetime import date
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class Code:
    code: str
    label: str
    aliases: tuple[str, ...] = ()


def fold_key(value: str) -> str:
    """The key a value and a label are compared on (must match validations.normalize.fold_code_key)."""
    v = unicodedata.normalize("NFKC", value).upper().replace("台", "臺")
    for ch in " []【】":
        v = v.replace(ch, "")
    return v


LEVELS = (
    Code("K", "幼兒園"), Code("E", "國小"), Code("J", "國中"), Code("S", "高中"),
    Code("V", "高職"), Code("X", "特殊教育學校"), Code("A", "不限"),
)
CLASS_TYPES = (
    Code("1", "非學分班"), Code("2", "學分班-學士"), Code("3", "學分班-碩士"),
)
DEGREE_CLASS_TYPES = frozenset({"2", "3"})
CATEGORIES = (
    Code("A", "課程、教學及評量"), Code("B", "班級經營與輔導"), Code("C", "專業發展與責任"),
    Code("D", "新興教育政策"), Code("E", "學校行政與領導"), Code("F", "實用知能與生活素養"),
)
ORGANIZER_TYPES = (
    Code("1", "學校"), Code("2", "縣市政府/教師研習中心"), Code("3", "師資培育之大學"),
    Code("4", "其他大專校院"), Code("5", "社教機構/法人團體"), Code("6", "中央政府機關"),
    Code("7", "教師專業組織/工會"),
)
DELIVERIES = (
    Code("1", "講授"), Code("2", "座談"), Code("3", "工作坊"), Code("4", "參訪實察"),
    Code("5", "觀課議課"), Code("6", "數位課程"),
)
TIME_SLOTS = (
    Code("1", "週一至週五白天"), Code("2", "週一至週五晚上"), Code("3", "週六"), Code("4", "週日"),
    Code("5", "暑假"), Code("6", "寒假"),
)
TAGS = (
    Code("T1", "教專評鑑", ("教師專業發展評鑑",)),
    Code("T2", "性平教育", ("性別平等教育",)),
    Code("T3", "環境教育", ("環境教育",)),
    Code("T4", "防災教育", ("防災教育",)),
    Code("T5", "教保專業", ("幼兒園教保專業知能",)),
    Code("T6", "基本訓練", ("基本救命術訓練",)),
    Code("T7", "安全教育", ("安全教育",)),
    Code("T8", "安全訓練", ("基本救命術訓練及安全教育",)),
)
# Spec §3.1 order: the six special municipalities, then counties and cities, then the national agency.
COUNTY_ORDER = ("63000", "64000", "65000", "66000", "67000", "68000", "10002", "10004", "10005", "10007",
                "10008", "10009", "10010", "10013", "10014", "10015", "10016", "10017", "10018", "10020",
                "09020", "09007", "00000")
# §3.8: the tags are a register the network keeps (registers/tags.py); these eight seed it, each valid
# from 2013-01-01 with no end. Uploads are judged against the register, not against this tuple.
TAGS_FROM = date(2013, 1, 1)
TAGS_BASIS = "資料傳報清單暨資料格式 1.1 §3.8"
# Planning survey (planning-survey.md §3): places and tiers of a plan; a plan's school level is one of
# the schools' levels of §3.2 (no 幼兒園, no 不限).
PLACES = (
    Code("P1", "服務學校"), Code("P2", "鄰近學校/社區學校"), Code("P3", "教師研習機構"), Code("P4", "師資培育之大學"),
    Code("P5", "電腦網路學習/遠距教學"), Code("P6", "非師資培育之大學"), Code("P7", "社教機構或民間團體"),
)
TIERS = (
    Code("1", "第一階基礎-瞭解熟悉"), Code("2", "第二階進階-應用分析"), Code("3", "第三階領導-整合評價"),
    Code("4", "第四階研發-創新推廣"),
)
PLAN_LEVELS = tuple(c for c in LEVELS if c.code in ("E", "J", "S", "V", "X"))
NATIONAL_AGENCY_COUNTY = Code("00000", "教育部國民及學前教育署")
# Legacy county codes (§3.1): merged 2010-12-25, Taoyuan upgraded 2014-12-25.
LEGACY_COUNTIES = {
    "10001": ("臺北縣", "65000"),
    "10006": ("臺中縣", "66000"),
    "10011": ("臺南縣", "67000"),
    "10012": ("高雄縣", "64000"),
    "10003": ("桃園縣", "68000"),
}


@cache
def counties() -> tuple[Code, ...]:
    with resources.files("inservice.schemas").joinpath("data/counties.csv").open(encoding="utf-8") as fh:
        rows = [Code(r["county_code"], r["county_name"], (r["full_name"],)) for r in csv.DictReader(fh)]
    return (*rows, NATIONAL_AGENCY_COUNTY)


def county_names() -> dict[str, str]:
    return {c.code: c.label for c in counties()}


def codelist(name: str) -> tuple[Code, ...]:
    return {
        "level": LEVELS,
        "class_type": CLASS_TYPES,
        "category": CATEGORIES,
        "organizer_type": ORGANIZER_TYPES,
        "delivery": DELIVERIES,
        "time_slot": TIME_SLOTS,
        "tag": TAGS,
        "county": counties(),
        "place": PLACES,
        "tier": TIERS,
        "plan_level": PLAN_LEVELS,
    }[name]


@cache
def lookup(name: str) -> dict[str, str]:
    """Folded key (code or label) → canonical code, for one code list."""
    table: dict[str, str] = {}
    for c in codelist(name):
        for key in (c.code, c.label, *c.aliases):
            table.setdefault(fold_key(key), c.code)
    if name == "county":
        for legacy, (label, successor) in LEGACY_COUNTIES.items():
            table[fold_key(legacy)] = successor
            table[fold_key(label)] = successor
    return table


def label_of(name: str, code: str) -> str:
    for c in codelist(name):
        if c.code == code:
            return c.label
    return code
