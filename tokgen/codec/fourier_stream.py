"""Decode a growing code sequence with the msvq decoder, computing each frame once.

``StreamDecoder``'s general path decodes every piece again from a window that adds the
decoder's receptive field on both sides (63 middle frames, 0.5 s, around a 0.25 s piece
with the shipped codec): 6.5x the work of one whole decode for a stream cut in 0.25 s
pieces (docs/PERFORMANCE.md, "Streaming decode"). The msvq decoder is a stack of
convolutions of width 7 over frames (an embedding, then ConvNeXt blocks), pointwise
layers, and an inverse STFT; so, as streaming codecs do with their convolutions, each
stage here keeps the last few frames of its input and computes only the outputs whose
whole context has arrived, and the inverse STFT overlap-adds frame by frame. A frame's
audio then costs what it costs in one whole decode, and the joined pieces equal that
decode (to float rounding; tests/test_fourier_stream.py).

Frames are counted from an origin the receptive field before the first wanted frame; the
stages pad zeros there, as a crop of the codes would, which no wanted sample can see.
The audio of a frame needs the codes of the receptive field after it (the codec's
``decode_lookahead``), which the caller waits for; at the end the codes are padded to
whole top frames and the stages to zeros, as in a whole decode.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from tokgen.codec.msvq import MultiScaleVQ


class _ValidConv:
    """One convolution stage over a growing sequence: ``push`` appends input frames and
    returns the outputs that are now computable (``fn`` maps a buffer of n input frames to
    its n - 6 fully supported outputs; ``padding``: the zero frames before and after a
    whole sequence). Zeros stand for the frames before the origin and, with ``final``,
    after the end, as the stage's own zero padding does in a whole decode."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], channels: int, padding: tuple[int, int]):
        self.fn = fn
        self.after = padding[1]
        self.context = sum(padding)
        self.buffer = torch.zeros(1, channels, padding[0])

    def push(self, x: torch.Tensor, final: bool) -> torch.Tensor:
        parts = [self.buffer, x] + ([x.new_zeros(1, x.shape[1], self.after)] if final else [])
        buffer = torch.cat(parts, dim=-1)
        ready = buffer.shape[-1] - self.context
        if ready <= 0:
            self.buffer = buffer
            return buffer[..., :0]
        self.buffer = buffer[..., ready:]
        return self.fn(buffer)


def _embed(conv: torch.nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    return conv(x)  # unpadded: the stage supplies the context


def _block(block: torch.nn.Module, timbre: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return block(x, timbre, valid=True)


class _OverlapAdd:
    """The inverse STFT (``torch.istft``, centred, hop = n_fft / 4), a frame at a time:
    each frame's windowed inverse FFT is added into four hop-long blocks, and a sample is
    final (divided by the window's summed square) once every frame over it is in."""

    def __init__(self, n_fft: int, hop: int, window: torch.Tensor, origin: int, done: int):
        assert n_fft == 4 * hop
        self.n_fft, self.hop, self.window = n_fft, hop, window
        self.window_squared = window**2  # what each frame adds to the normalisation
        self.block0 = origin - 2  # centred: frame f covers blocks f - 2 .. f + 1
        self.sum = torch.zeros(0)
        self.weight = torch.zeros(0)
        self.frames = origin  # the next frame to add
        self.done = done  # samples returned so far (none yet), counted from the sequence start

    def add(self, spec: torch.Tensor) -> None:
        """Frames ``self.frames ..`` as complex spectra (1, n_fft / 2 + 1, n)."""
        n = spec.shape[-1]
        if n == 0:
            return
        hop = self.hop
        wave = torch.fft.irfft(spec[0], n=self.n_fft, dim=0) * self.window[:, None]  # (n_fft, n)
        blocks = self.frames + n + 1 - self.block0  # through the last frame's last block
        grow = blocks * hop - self.sum.numel()
        self.sum = torch.cat([self.sum, self.sum.new_zeros(grow)])
        self.weight = torch.cat([self.weight, self.weight.new_zeros(grow)])
        first = (self.frames - 2 - self.block0) * hop
        for j in range(4):  # block j of each frame's 4
            part = wave[j * hop : (j + 1) * hop].T.reshape(-1)
            lo = first + j * hop
            self.sum[lo : lo + n * hop] += part
            self.weight[lo : lo + n * hop] += self.window_squared[j * hop : (j + 1) * hop].repeat(n)
        self.frames += n

    def take(self, until: int) -> np.ndarray:
        """Samples ``done .. until`` (from the sequence start), which must be final."""
        final_end = (self.frames - 2) * self.hop  # blocks up to frames - 3 have all 4 frames
        assert until <= max(final_end, self.done), (until, final_end)
        return self._cut(until)

    def flush(self, until: int) -> np.ndarray:
        """The end of the sequence: every remaining sample up to ``until`` is final."""
        return self._cut(until)

    def _cut(self, until: int) -> np.ndarray:
        start = self.block0 * self.hop
        lo, hi = self.done - start, until - start
        out = self.sum[lo:hi] / self.weight[lo:hi]
        self.sum, self.weight = self.sum[hi - hi % self.hop :], self.weight[hi - hi % self.hop :]
        self.block0 += hi // self.hop
        self.done = until
        return out.numpy().astype(np.float32)


class FourierStream:
    """The msvq decoder over codes that arrive as growing prefixes of levels 0..n-1.

    ``decode(codes, stop, final)`` returns the audio of frames ``first .. stop`` of the
    finest level given (then from where the last call stopped); codes must reach the
    decoder's lookahead past ``stop`` (``Codec.decode_lookahead``), as ``StreamDecoder``
    ensures. With ``final`` the codes are complete: the rest is returned, padded to whole
    top frames first, as ``MSVQCodec.decode_levels`` does."""

    def __init__(self, model: MultiScaleVQ, levels: int, first: int, timbre: torch.Tensor | None):
        cfg, dec = model.cfg, model.decoder
        self.model, self.timbre = model, timbre
        self.strides = cfg.level_strides[:levels]  # encoder frames per code, top first
        self.fold = dec.fold  # encoder frames per decoder frame
        self.fine_hop = self.strides[-1] * cfg.encoder_hop  # samples per finest-level frame
        origin = max(0, first * self.strides[-1] // self.fold - dec.history_frames)
        self.fed = origin  # decoder frames given to the first stage
        width, pad = dec.embed.out_channels, dec.padding
        self.stages = [_ValidConv(partial(_embed, dec.embed), dec.embed.in_channels, pad)]
        self.stages += [_ValidConv(partial(_block, block, timbre), width, pad) for block in dec.blocks]
        self.ola = _OverlapAdd(dec.n_fft, dec.hop, dec.window, origin, first * self.fine_hop)

    def _latents(self, codes: list[np.ndarray], stop: int) -> torch.Tensor:
        """Decoder frames ``fed .. stop`` (1, latent x fold, n) from the codes."""
        lo, hi = self.fed * self.fold, stop * self.fold  # encoder frames
        z = torch.zeros(())
        for level, (c, stride) in enumerate(zip(codes, self.strides, strict=True)):
            a, b = lo // stride, -(-hi // stride)
            frames = torch.from_numpy(c[a:b].astype(np.int64))[None]
            q = self.model.level_latent(level, frames, (b - a) * stride)
            z = z + q[..., lo - a * stride : hi - a * stride]
        return self.model.decoder.fold_latents(z)

    @torch.inference_mode()
    def decode(self, codes: list[np.ndarray], stop: int, final: bool = False) -> np.ndarray:
        if final:
            samples = codes[-1].size * self.fine_hop
            codes = whole_top_frames(codes, self.strides)
            available = codes[0].size * self.strides[0] // self.fold
        else:
            available = min(c.size * s for c, s in zip(codes, self.strides, strict=True)) // self.fold
        x = self._latents(codes, available) if available > self.fed else None
        if x is not None:
            self.fed = available
        for stage in self.stages:
            if x is None and not final:
                break
            x = stage.push(x if x is not None else stage.buffer[..., :0], final)
        if x is not None and x.shape[-1]:
            self.ola.add(self.model.decoder.spectrum(x))
        if final:
            return self.ola.flush(samples)
        return self.ola.take(stop * self.fine_hop)


def whole_top_frames(codes: list[np.ndarray], strides: list[int]) -> list[np.ndarray]:
    """Every level padded with its last code (or cut) to the top frames that cover the
    finest level; ``strides``: encoder frames per code, top first. What a whole decode
    (``MSVQCodec.decode_levels``) and the end of a stream decode both read."""
    top_frames = -(-codes[-1].size * strides[-1] // strides[0])
    out = []
    for c, stride in zip(codes, strides, strict=True):
        want = top_frames * strides[0] // stride
        out.append(np.concatenate([c, np.repeat(c[-1:], max(0, want - c.size))])[:want])
    return out
