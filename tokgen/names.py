"""The API's enums by the names people write them (CLI flags, HTTP form fields, the Python
client's arguments), one table each. It sits below every layer that speaks them, so the
server and the client read the same table and neither imports the other."""

from __future__ import annotations

from typing import Literal, cast

from tokgen.v1 import tokgen_pb2 as pb

Mode = Literal["primed", "ancestral", "continue", "upsample"]
# How urgent a request is: for admission (serve) and the job queue (jobs).
Priority = Literal["high", "normal", "low"]

MODES = {
    "primed": pb.MODE_PRIMED,
    "ancestral": pb.MODE_ANCESTRAL,
    "continue": pb.MODE_CONTINUE,
    "upsample": pb.MODE_UPSAMPLE,
}
PRIORITIES = {
    "high": pb.PRIORITY_HIGH,
    "normal": pb.PRIORITY_NORMAL,
    "low": pb.PRIORITY_LOW,
}
# Wire values back to names (UNSPECIFIED: the default).
MODE_NAMES: dict[int, Mode] = {int(value): cast(Mode, name) for name, value in MODES.items()}
MODE_NAMES[pb.MODE_UNSPECIFIED] = "primed"
PRIORITY_NAMES: dict[int, Priority] = {int(value): cast(Priority, name) for name, value in PRIORITIES.items()}
PRIORITY_NAMES[pb.PRIORITY_UNSPECIFIED] = "normal"
