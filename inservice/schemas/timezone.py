"""The spec's clock: every date and time of the network is Taipei time (spec §2.3)."""

from zoneinfo import ZoneInfo

TAIPEI = ZoneInfo("Asia/Taipei")
