"""The API's enums by the names people write them (CLI flags, HTTP form fields, the Python
client's arguments), one table each. It sits below every layer that speaks them, so the
server and the client read the same table and neither imports the other."""

from __future__ import annotations

from typing import Literal, cast

from google.protobuf.json_format import MessageToDict

from tokgen.v1 import jobs_pb2 as jpb
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


def job_dict(job: jpb.Job) -> dict:
    """A job as JSON with its enums by these names (``tokgen jobs``, the HTTP API)."""
    out = MessageToDict(job, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    out["state"] = jpb.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
    out["priority"] = out["priority"].removeprefix("PRIORITY_").lower()
    if job.HasField("seed"):  # proto JSON writes a uint64 as a string
        out["seed"] = job.seed
    return out
