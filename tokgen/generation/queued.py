"""``QueuedJob``: a validated, prepared request in the form the job queue stores.

The server validates a job's request and decodes and encodes its prime once, at the edge;
the queue keeps the result (every level's known codes, the length, the sampling settings),
not the client's raw request, so a worker neither parses nor validates it again. The bytes
are versioned: a worker refuses a version it does not know, rather than misreading it.
Only numbers and int arrays are stored (``.npz`` without pickles), so loading is safe.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass

import numpy as np

from tokgen.errors import TokgenError
from tokgen.generation.generate import Job
from tokgen.generation.sampler import SamplingSettings

FORMAT_VERSION = 1
MAX_LEVELS = 16
MAX_REFERENCE = 10 * 48000  # samples of timbre reference audio


class QueuedJobError(TokgenError):
    """Queued bytes that are not a job this version can run (retrying cannot help)."""


@dataclass(frozen=True)
class QueuedJob:
    job: Job
    settings: SamplingSettings
    samples: int | None  # new samples asked for (None: all, mode upsample)

    def dumps(self) -> bytes:
        meta = {
            "version": FORMAT_VERSION,
            "top_frames": self.job.top_frames,
            "start_top": self.job.start_top,
            "samples": self.samples,
            "levels": len(self.job.known),
            "settings": {
                "temperature": self.settings.temperature,
                "top_k": self.settings.top_k,
                "top_p": self.settings.top_p,
                "seed": self.settings.seed,
            },
        }
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
                if meta.get("version") != FORMAT_VERSION:
                    raise QueuedJobError(
                        f"queued job format version {meta.get('version')!r}; this worker runs "
                        f"version {FORMAT_VERSION}"
                    )
                levels = int(meta["levels"])
                if not 0 < levels <= MAX_LEVELS:
                    raise QueuedJobError(f"a queued job with {levels} levels")
                known = [archive[f"known_{i}"].astype(np.int64) for i in range(levels)]
                s = meta["settings"]
                settings = SamplingSettings(
                    float(s["temperature"]), int(s["top_k"]), float(s["top_p"]), int(s["seed"])
                )
                reference = archive["reference"].astype(np.float32) if "reference" in archive else None
                if reference is not None and (reference.ndim != 1 or reference.size > MAX_REFERENCE):
                    raise QueuedJobError(f"a queued job with a reference of shape {reference.shape}")
                job = Job(known, int(meta["top_frames"]), int(meta["start_top"]), reference)
                samples = None if meta["samples"] is None else int(meta["samples"])
        except QueuedJobError:
            raise
        except (ValueError, KeyError, TypeError, OSError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
            raise QueuedJobError(f"queued bytes are not a tokgen job: {exc}") from exc
        return cls(job, settings, samples)
