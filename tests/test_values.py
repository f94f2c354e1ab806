"""Value formats of spec §2.3 and the ID checksum of §4, at the parser level."""

from __future__ import annotations

import random
from datetime import date, datetime

import pyarrow as pa
import pytest

from inservice.loaders.base import RawUpload, canonical_table
from inservice.schemas import codelists
from inservice.schemas.fields import ATTENDANCE, COURSE
from inservice.schemas.xsd import render_xsd, shipped_xsd_text
from inservice.validations import engine, national_id, normalize
from inservice.validations.engine import Context, validate
from inservice.validations.pseudonym import Pseudonymiser
from tests.builders import attendee, course, id_check_digit, make_id

pytestmark = pytest.mark.both_backends  # tests reaching a warehouse run on each of --backends


@pytest.mark.parametrize(("text", "expected"), [
    ("2017-05-31", date(2017, 5, 31)), ("106/05/31", date(2017, 5, 31)), ("106-05-31", date(2017, 5, 31)),
    ("106.05.31", date(2017, 5, 31)), ("1060531", date(2017, 5, 31)), ("990105", date(2010, 1, 5)),
    ("99/1/5", date(2010, 1, 5)), ("2017-05-31 00:00:00", date(2017, 5, 31)), ("１０６／０５／３１", date(2017, 5, 31)),
    ("　106/05/31 ", date(2017, 5, 31)), ("105/02/29", date(2016, 2, 29)),
])
def test_dates(text: str, expected: date) -> None:
    parsed, bad = normalize.parse_date(pa.array([text]))
    assert parsed.to_pylist() == [expected] and bad.to_pylist() == [False]


@pytest.mark.parametrize("text", ["106/02/29", "2017-02-30", "106/13/01", "0113-09-07", "20170531", "31/05/2017",
                                  "106年5月31日", "abc", "1060532", "1.5"])
def test_bad_dates(text: str) -> None:
    parsed, bad = normalize.parse_date(pa.array([text]))
    assert parsed.to_pylist() == [None] and bad.to_pylist() == [True]


def test_missing_is_not_bad() -> None:
    parsed, bad = normalize.parse_date(pa.array([None, "", "　 "], pa.string()))
    assert parsed.to_pylist() == [None] * 3 and bad.to_pylist() == [False] * 3


def test_datetimes() -> None:
    parsed, bad = normalize.parse_datetime(pa.array(["2017-05-31 08:30", "106/05/31 23:59:59", "1060531 07:00",
                                                     "2017-05-31 24:00", "2017-05-31"]))
    assert parsed.to_pylist() == [datetime(2017, 5, 31, 8, 30), datetime(2017, 5, 31, 23, 59, 59),
                                  datetime(2017, 5, 31, 7, 0), None, datetime(2017, 5, 31)]
    assert bad.to_pylist() == [False, False, False, True, False]


def test_numbers() -> None:
    parsed, bad = normalize.parse_number(pa.array(["6", "6.5", "６．５", "06.0", "6.00", "1,000", "6.25", "1e3", "-2"]))
    assert parsed.to_pylist() == [6, 6.5, 6.5, 6, 6, None, None, None, -2]
    assert bad.to_pylist() == [False, False, False, False, False, True, True, True, False]


def test_yes_no() -> None:
    parsed, bad = normalize.parse_yesno(pa.array(["Y", "n", "是", "否", "1", "0", "TRUE", "False", "ｙ", "x"]))
    assert parsed.to_pylist() == [True, False, True, False, True, False, True, False, True, None]
    assert bad.to_pylist()[-1] is True


def test_codes_labels_legacy_and_tai() -> None:
    parsed, bad = normalize.parse_code(pa.array(["63000", "臺北市", "台北市", "10001", "臺北縣", "10003", "00000",
                                                 "金門縣", "99999"]), "county")
    assert parsed.to_pylist() == ["63000", "63000", "63000", "65000", "65000", "68000", "00000", "09020", None]
    tags, bad = normalize.parse_codes(pa.array(["T1;T8", "[教專評鑑]；基本救命術訓練及安全教育", "教師專業發展評鑑",
                                                "安全訓練", "T9", ""]), "tag")
    assert tags.to_pylist() == ["T1;T8", "T1;T8", "T1", "T8", None, None]
    assert bad.to_pylist() == [False, False, False, False, True, False]


def test_code_lists_are_complete() -> None:
    assert len(codelists.counties()) == 23  # 22 + 00000
    assert [c.code for c in codelists.LEVELS] == list("KEJSVXA")
    assert len(codelists.TAGS) == 8


def test_national_id_checksum_matches_the_spec() -> None:
    rng = random.Random(3)
    valid = [make_id(rng, kind) for kind in ("national", "new_resident", "old_resident") for _ in range(300)]
    # the textbook example of the spec's algorithm
    assert id_check_digit("A12345678") == 9
    invalid = [v[:-1] + str((int(v[-1]) + d) % 10) for v in valid[:300] for d in (1, 5)]
    shapes = ["A323456789", "a123456789", "A12345678", "1123456789", "AE12345678", "A1234567890", "ＡＢ"]
    got = national_id.is_valid(pa.array(valid + invalid + shapes)).to_pylist()
    assert got[: len(valid)] == [True] * len(valid)
    assert got[len(valid):] == [False] * (len(invalid) + len(shapes))
    assert [national_id.checksum_ok_scalar(v) for v in valid[:50]] == [True] * 50


def test_mask() -> None:
    assert national_id.mask(pa.array(["A123456789", "AB", None])).to_pylist() == ["A12*****89", "**", None]
    # ten characters take the one-slice way, any other length the general one, in one array
    mixed = ["A123456789", "王小明王小明王小明王", "A1234567890", "ABCDEF", "ABCDE", "", None]
    assert national_id.mask(pa.array(mixed)).to_pylist() == [
        "A12*****89", "王小明*****明王", "A12******90", "ABC*EF", "*****", "", None]


def test_vectorised_keys_are_the_hmac_of_each_id_in_order() -> None:
    """`keys` (DuckDB, in chunks hashed on several threads) equals Python's HMAC row for row."""
    rng = random.Random(9)
    ids = [None if rng.random() < 0.1 else make_id(rng) for _ in range(3 * 32_768 + 5)]
    p = Pseudonymiser(b"a key of some length")
    assert p.keys(pa.array(ids, pa.string())).to_pylist() == [None if i is None else p.one(i) for i in ids]


def test_id_numbers_tell_ids_apart() -> None:
    """`check` numbers each valid ID: equal IDs, equal numbers; different IDs, different numbers."""
    rng = random.Random(5)
    ids = [make_id(rng, kind) for kind in ("national", "new_resident", "old_resident") for _ in range(2000)]
    ids += ids[:100] + ["A123456780", None]  # repeats, a bad checksum, a missing ID
    valid, numbers = national_id.check(pa.array(ids))
    assert valid.to_pylist() == national_id.is_valid(pa.array(ids)).to_pylist()
    pairs = {(i, n) for i, n, ok in zip(ids, numbers.to_pylist(), valid.to_pylist(), strict=True) if ok}
    assert len({i for i, _ in pairs}) == len({n for _, n in pairs}) == len(pairs) == len(set(ids[:6000]))
    assert numbers.to_pylist()[-2:] == [None, None]


def test_shipped_xsd_is_generated_from_the_fields() -> None:
    assert shipped_xsd_text() == render_xsd()


def test_large_columns_parse_per_distinct_value_as_per_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """A large column of few distinct values is parsed once per value and spread back: the same
    typed values, findings and accepted rows as parsing every row (and the same rows as validate)."""
    rng = random.Random(4)
    ids = [make_id(rng) for _ in range(40)]
    codes = ["C1", " C2", "Ｃ3", "C4", "", None, "bad code!"]
    courses = [course("C1"), course("C2", hours="abc"), course("C3", start_date="106/05/10", end_date="1060510")]
    attendance = [attendee(rng.choice(codes), rng.choice(ids + ["A123456780", None, "ａ" + ids[0][1:]]),
                           school_code=rng.choice(["423605", "４２３６０５", " 999999", "12", "", None]),
                           hours_granted=rng.choice(["6", "６", "3.0", "6.25", "x", "", None]),
                           completed=rng.choice(["Y", "是", "n", "ｙ", "maybe", "1.0", "", None]),
                           unit_code=rng.choice(["T001", "Ｔ001", " T001", None]))
                  for _ in range(12_000)]

    def run() -> tuple:
        def table(rt, rows):
            cols = {f.code: pa.array([r.get(f.code) for r in rows], pa.string()) for f in rt.fields}
            return canonical_table(rt, pa.array(range(2, len(rows) + 2)), cols)

        ctx = Context(unit="T001", channel="file", received_on=date(2017, 6, 3), pseudonymiser=Pseudonymiser(b"k"))
        v = validate(RawUpload(table(COURSE, courses), table(ATTENDANCE, attendance)), ctx)
        return v.courses, v.attendance, v.findings

    by_value = run()
    monkeypatch.setattr(engine, "_DISTINCT_MIN", 10**9)  # every row parsed as it is
    by_row = run()
    assert by_value[2].num_rows > 1000
    for a, b in zip(by_value, by_row, strict=True):
        assert a.equals(b)
