"""``QueuedJob``: a validated, prepared request in the form the job queue stores.

The server validates a job's request and decodes and encodes its prime once, at the edge;
the queue keeps the result (every level's known codes, the length, the sampling settings),
not the client's raw request, so a worker neither parses nor validates it again. The bytes
are versioned: a worker refuses a version it does not know, rather than misreading it.
Only numbers and int arrays are stored (``.npz`` without pickles), so loading is safe.
Version 2 adds the output (sample rate, loudness); a job without one is still written as
version 1, which workers of either version run (so a rolling upgrade loses no job).
Version 3 adds the key guidance (``generation.key``); a job without any is written as
before, and an older worker refuses a guided one rather than run it unguided.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from dataclasses import dataclass, field

import numpy as np

from tokgen.errors import TokgenError
from tokgen.generation.generate import Job
from tokgen.generation.output import Output
from tokgen.generation.sampler import SamplingSettings

FORMAT_VERSION = 3
VERSIONS = (1, 2, 3, 4)  # what this worker reads
MAX_LEVELS = 16
MAX_REFERENCE = 10 * 48000  # samples of timbre reference audio


class QueuedJobError(TokgenError):
    """Queued bytes that are not a job this version can run (retrying cannot help)."""


@dataclass(frozen=True)
class QueuedJob:
    job: Job
    settings: SamplingSettings
    samples: int | None  # new samples asked for (None: all, mode upsample)
    output: Output = field(default_factory=Output)

    def version(self) -> int:
        """The oldest format that holds this job, so that workers that predate a setting
        refuse jobs that use it (rather than run them without) and run all others."""
        if self.settings.instrument_guidance:
            return 4
        if self.settings.key_guidance:
            return 3
        return 1 if self.output == Output() else 2

    def dumps(self) -> bytes:
        meta: dict = {
            "version": self.version(),
            "top_frames": self.job.top_frames,
            "start_top": self.job.start_top,
            "samples": self.samples,
            "levels": len(self.job.known),
            "settings": {
                "temperature": self.settings.temperature,
                "top_k": self.settings.top_k,
                "top_p": self.settings.top_p,
                "seed": self.settings.seed,
                "key_guidance": self.settings.key_guidance,
                "instrument_guidance": self.settings.instrument_guidance,
            },
        }
        if self.output != Output():
            meta["output"] = dataclasses.asdict(self.output)
        arrays = {f"known_{i}": k.astype(np.int32) for i, k in enumerate(self.job.known)}
        if self.job.reference is not None:
            arrays["reference"] = self.job.reference.astype(np.float16)
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    @classmethod
    def loads(cls, data: bytes) -> QueuedJob:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                meta = json.loads(archive["meta"].tobytes().decode())
                if meta.get("version") not in VERSIONS:
                    raise QueuedJobError(
                        f"queued job format version {meta.get('version')!r}; this worker runs "
                        f"versions {', '.join(map(str, VERSIONS))}"
                    )
                levels = int(meta["levels"])
                if not 0 < levels <= MAX_LEVELS:
                    raise QueuedJobError(f"a queued job with {levels} levels")
                known = [archive[f"known_{i}"].astype(np.int64) for i in range(levels)]
                s = meta["settings"]
                settings = SamplingSettings(
                    float(s["temperature"]),
                    int(s["top_k"]),
                    float(s["top_p"]),
                    int(s["seed"]),
                    float(s.get("key_guidance", 0.0)),  # versions 1 and 2: none
                    float(s.get("instrument_guidance", 0.0)),  # versions 1 to 3: none
                )
                reference = archive["reference"].astype(np.float32) if "reference" in archive else None
                if reference is not None and (reference.ndim != 1 or reference.size > MAX_REFERENCE):
                    raise QueuedJobError(f"a queued job with a reference of shape {reference.shape}")
                job = Job(known, int(meta["top_frames"]), int(meta["start_top"]), reference)
                samples = None if meta["samples"] is None else int(meta["samples"])
                out = meta.get("output") or {}
                rate, lufs = out.get("sample_rate"), out.get("loudness_lufs")
                output = Output(None if rate is None else int(rate), None if lufs is None else float(lufs))
        except QueuedJobError:
            raise
        except (ValueError, KeyError, TypeError, OSError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
            raise QueuedJobError(f"queued bytes are not a tokgen job: {exc}") from exc
        return cls(job, settings, samples, output)
