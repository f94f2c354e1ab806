"""The XSD of the XML shape (spec §2.4), generated from the field declarations.

All field elements are optional strings in any order: a missing or malformed value is a row
finding (C01/C02...), not a structural refusal. Unknown or repeated elements break the shape (F07).
The shipped `data/transmission.xsd` is this text; a test keeps the two equal.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from inservice.schemas.fields import ATTENDANCE, COURSE, RecordType


def _record_type(rt: RecordType) -> str:
    elements = "\n".join(
        f'      <xs:element name="{f.code}" type="xs:string" minOccurs="0"/>' for f in rt.fields
    )
    return (
        f'  <xs:complexType name="{rt.xml_element}Type">\n'
        f"    <xs:all>\n{elements}\n    </xs:all>\n"
        f"  </xs:complexType>\n"
    )


def _container(rt: RecordType) -> str:
    return (
        f'        <xs:element name="{rt.xml_container}">\n'
        f"          <xs:complexType><xs:sequence>\n"
        f'            <xs:element name="{rt.xml_element}" type="{rt.xml_element}Type"'
        f' minOccurs="0" maxOccurs="unbounded"/>\n'
        f"          </xs:sequence></xs:complexType>\n"
        f"        </xs:element>\n"
    )


def render_xsd() -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<!-- 全國教師在職進修資訊網 transmission format v1.0, §2.4 XML shape. "
        "Generated from inservice/schemas/fields.py -->\n"
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" elementFormDefault="unqualified">\n'
        '  <xs:element name="Transmission">\n'
        "    <xs:complexType>\n"
        "      <xs:sequence>\n"
        f"{_container(COURSE)}{_container(ATTENDANCE)}"
        "      </xs:sequence>\n"
        '      <xs:attribute name="unit" type="xs:string" use="required"/>\n'
        '      <xs:attribute name="month" use="required">\n'
        '        <xs:simpleType><xs:restriction base="xs:string">'
        '<xs:pattern value="[0-9]{4}-[0-9]{2}"/></xs:restriction></xs:simpleType>\n'
        "      </xs:attribute>\n"
        '      <xs:attribute name="specVersion" type="xs:string"/>\n'
        "    </xs:complexType>\n"
        "  </xs:element>\n"
        f"{_record_type(COURSE)}{_record_type(ATTENDANCE)}"
        "</xs:schema>\n"
    )


def shipped_xsd_text() -> str:
    return resources.files("inservice.schemas").joinpath("data/transmission.xsd").read_text("utf-8")


@cache
def schema():
    from lxml import etree

    return etree.XMLSchema(etree.fromstring(shipped_xsd_text().encode("utf-8")))
