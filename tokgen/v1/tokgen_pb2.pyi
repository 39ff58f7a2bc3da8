from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_PRIMED: _ClassVar[Mode]
    MODE_ANCESTRAL: _ClassVar[Mode]
    MODE_CONTINUE: _ClassVar[Mode]
    MODE_UPSAMPLE: _ClassVar[Mode]

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_HIGH: _ClassVar[Priority]
    PRIORITY_NORMAL: _ClassVar[Priority]
    PRIORITY_LOW: _ClassVar[Priority]
MODE_UNSPECIFIED: Mode
MODE_PRIMED: Mode
MODE_ANCESTRAL: Mode
MODE_CONTINUE: Mode
MODE_UPSAMPLE: Mode
PRIORITY_UNSPECIFIED: Priority
PRIORITY_HIGH: Priority
PRIORITY_NORMAL: Priority
PRIORITY_LOW: Priority

class SamplingParams(_message.Message):
    __slots__ = ("temperature", "top_k", "top_p", "seed", "key_guidance", "instrument_guidance")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    KEY_GUIDANCE_FIELD_NUMBER: _ClassVar[int]
    INSTRUMENT_GUIDANCE_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_k: int
    top_p: float
    seed: int
    key_guidance: float
    instrument_guidance: float
    def __init__(self, temperature: _Optional[float] = ..., top_k: _Optional[int] = ..., top_p: _Optional[float] = ..., seed: _Optional[int] = ..., key_guidance: _Optional[float] = ..., instrument_guidance: _Optional[float] = ...) -> None: ...

class ContinueRequest(_message.Message):
    __slots__ = ("prime_audio", "codes", "seconds", "sampling", "mode", "priority", "num_samples", "sample_rate", "loudness_lufs")
    PRIME_AUDIO_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    LOUDNESS_LUFS_FIELD_NUMBER: _ClassVar[int]
    prime_audio: bytes
    codes: bytes
    seconds: float
    sampling: SamplingParams
    mode: Mode
    priority: Priority
    num_samples: int
    sample_rate: int
    loudness_lufs: float
    def __init__(self, prime_audio: _Optional[bytes] = ..., codes: _Optional[bytes] = ..., seconds: _Optional[float] = ..., sampling: _Optional[_Union[SamplingParams, _Mapping]] = ..., mode: _Optional[_Union[Mode, str]] = ..., priority: _Optional[_Union[Priority, str]] = ..., num_samples: _Optional[int] = ..., sample_rate: _Optional[int] = ..., loudness_lufs: _Optional[float] = ...) -> None: ...

class AudioFormat(_message.Message):
    __slots__ = ("sample_rate", "channels", "encoding")
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    sample_rate: int
    channels: int
    encoding: str
    def __init__(self, sample_rate: _Optional[int] = ..., channels: _Optional[int] = ..., encoding: _Optional[str] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("format", "pcm", "offset_seconds", "sample_index")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    PCM_FIELD_NUMBER: _ClassVar[int]
    OFFSET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_INDEX_FIELD_NUMBER: _ClassVar[int]
    format: AudioFormat
    pcm: bytes
    offset_seconds: float
    sample_index: int
    def __init__(self, format: _Optional[_Union[AudioFormat, _Mapping]] = ..., pcm: _Optional[bytes] = ..., offset_seconds: _Optional[float] = ..., sample_index: _Optional[int] = ...) -> None: ...

class LevelStats(_message.Message):
    __slots__ = ("level", "tokens", "seconds")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    level: int
    tokens: int
    seconds: float
    def __init__(self, level: _Optional[int] = ..., tokens: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class Summary(_message.Message):
    __slots__ = ("levels", "audio_seconds", "time_to_first_audio_seconds", "total_seconds", "prime_seconds_in_context", "seed", "seeds")
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_AUDIO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PRIME_SECONDS_IN_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    levels: _containers.RepeatedCompositeFieldContainer[LevelStats]
    audio_seconds: float
    time_to_first_audio_seconds: float
    total_seconds: float
    prime_seconds_in_context: _containers.RepeatedScalarFieldContainer[float]
    seed: int
    seeds: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, levels: _Optional[_Iterable[_Union[LevelStats, _Mapping]]] = ..., audio_seconds: _Optional[float] = ..., time_to_first_audio_seconds: _Optional[float] = ..., total_seconds: _Optional[float] = ..., prime_seconds_in_context: _Optional[_Iterable[float]] = ..., seed: _Optional[int] = ..., seeds: _Optional[_Iterable[int]] = ...) -> None: ...

class ContinueResponse(_message.Message):
    __slots__ = ("chunk", "summary")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    chunk: AudioChunk
    summary: Summary
    def __init__(self, chunk: _Optional[_Union[AudioChunk, _Mapping]] = ..., summary: _Optional[_Union[Summary, _Mapping]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LevelInfo(_message.Message):
    __slots__ = ("level", "hop", "codebook_size", "context_tokens")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    HOP_FIELD_NUMBER: _ClassVar[int]
    CODEBOOK_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    level: int
    hop: int
    codebook_size: int
    context_tokens: int
    def __init__(self, level: _Optional[int] = ..., hop: _Optional[int] = ..., codebook_size: _Optional[int] = ..., context_tokens: _Optional[int] = ...) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("codec", "sample_rate", "levels", "engine_backend", "max_prime_seconds", "max_seconds", "max_request_bytes", "max_num_samples", "min_output_sample_rate", "max_output_sample_rate")
    CODEC_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_BACKEND_FIELD_NUMBER: _ClassVar[int]
    MAX_PRIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MIN_OUTPUT_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    codec: str
    sample_rate: int
    levels: _containers.RepeatedCompositeFieldContainer[LevelInfo]
    engine_backend: str
    max_prime_seconds: float
    max_seconds: float
    max_request_bytes: int
    max_num_samples: int
    min_output_sample_rate: int
    max_output_sample_rate: int
    def __init__(self, codec: _Optional[str] = ..., sample_rate: _Optional[int] = ..., levels: _Optional[_Iterable[_Union[LevelInfo, _Mapping]]] = ..., engine_backend: _Optional[str] = ..., max_prime_seconds: _Optional[float] = ..., max_seconds: _Optional[float] = ..., max_request_bytes: _Optional[int] = ..., max_num_samples: _Optional[int] = ..., min_output_sample_rate: _Optional[int] = ..., max_output_sample_rate: _Optional[int] = ...) -> None: ...
