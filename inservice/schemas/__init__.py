"""The transmission format spec (v1.0), encoded once: fields, code lists, rules, reference data, XSD."""

from inservice.schemas.fields import ATTENDANCE, COURSE, RECORD_TYPES, Field, RecordType

__all__ = ["ATTENDANCE", "COURSE", "RECORD_TYPES", "Field", "RecordType"]
