"""Vector quantisation with EMA codebook updates and dead-code restarts (as in Jukebox).

The codebook is not learned by gradients: each entry tracks an exponential moving average
of the encoder outputs assigned to it (VQ-VAE-2 / Jukebox), which is more stable than the
codebook loss. Entries whose EMA usage falls below ``restart_fraction`` of the average
entry's usage are re-seeded with random encoder outputs of the current batch, which keeps
codebook usage high. The threshold is relative because a coarse level sees few vectors
per batch (8 x 0.5 s at hop 512 is 128 vectors for 1024 codes): Jukebox's absolute
threshold of one vector per step would then restart nearly every code at every step. The encoder
gets gradients through the straight-through estimator and a commitment loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # (B, D, T), straight-through: gradients flow to the input
    codes: torch.Tensor  # (B, T) int64
    commit_loss: torch.Tensor  # scalar
    perplexity: torch.Tensor  # scalar, of this batch's code usage
    restarted: int  # codes re-seeded in this step


class EMAVectorQuantizer(nn.Module):
    codebook: torch.Tensor  # (K, D) buffers, updated by EMA rather than by gradients
    ema_count: torch.Tensor  # (K,)
    ema_sum: torch.Tensor  # (K, D)
    initialized: torch.Tensor  # () bool

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        decay: float = 0.99,
        restart_fraction: float = 0.1,
        eps: float = 1e-5,
        frozen: bool = False,
    ):
        super().__init__()
        # A frozen codebook is set from outside (k-means) and never updated in training.
        self.frozen = frozen
        self.codebook_size = codebook_size
        self.dim = dim
        self.decay = decay
        self.restart_fraction = restart_fraction
        self.eps = eps
        self.register_buffer("codebook", torch.zeros(codebook_size, dim))
        self.register_buffer("ema_count", torch.zeros(codebook_size))
        self.register_buffer("ema_sum", torch.zeros(codebook_size, dim))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def nearest(self, x: torch.Tensor, block_rows: int = 4096) -> torch.Tensor:
        """Index of the nearest codebook entry for each row of ``x`` (N, D). Rows go
        ``block_rows`` at a time: the distances of all rows at once are N x codebook
        floats (a minute of bottom-level frames against 1,024 codes: 123 MB, and the
        arithmetic makes three of them), which dominated the memory of encoding a prime."""
        book = self.codebook.detach()
        book_sq = book.pow(2).sum(1)[None, :]
        codes = [torch.zeros(0, dtype=torch.long)]
        with torch.no_grad():  # an argmin has no gradient
            for rows in x.detach().split(block_rows):
                dist = rows.pow(2).sum(1, keepdim=True) - 2 * rows @ book.t() + book_sq
                codes.append(dist.argmin(dim=1))
        return torch.cat(codes)

    def _random_rows(self, x: torch.Tensor, n: int) -> torch.Tensor:
        idx = torch.randint(0, x.shape[0], (n,), device=x.device)
        return x[idx] + 0.01 * x.std() * torch.randn(n, x.shape[1], device=x.device)

    @torch.no_grad()
    def _init_codebook(self, x: torch.Tensor) -> None:
        """Seed every entry with a random encoder output, so no code starts dead."""
        rows = self._random_rows(x, self.codebook_size)
        start = self._fresh_count(x.shape[0] / self.codebook_size)
        self.codebook.copy_(rows)
        self.ema_sum.copy_(rows * start)
        self.ema_count.fill_(start)
        self.initialized.fill_(True)

    def _fresh_count(self, mean_count: float) -> float:
        """EMA usage given to a new entry: twice the dead threshold, so an entry that
        attracts no vectors is re-seeded after ~70 steps (0.99 ** 70 ~ 0.5)."""
        return 2 * self.restart_fraction * mean_count

    @torch.no_grad()
    def _ema_update(self, x: torch.Tensor, codes: torch.Tensor) -> int:
        counts = torch.bincount(codes, minlength=self.codebook_size).to(x.dtype)
        sums = torch.zeros_like(self.ema_sum).index_add_(0, codes, x)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        # Laplace smoothing keeps rarely used entries from dividing by ~0.
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (total + self.codebook_size * self.eps) * total
        self.codebook.copy_(self.ema_sum / smoothed[:, None])
        mean_count = float(self.ema_count.mean())
        dead = self.ema_count < self.restart_fraction * mean_count
        n_dead = int(dead.sum())
        if n_dead:
            rows = self._random_rows(x, n_dead)
            start = self._fresh_count(mean_count)
            self.codebook[dead] = rows
            self.ema_sum[dead] = rows * start
            self.ema_count[dead] = start
        return n_dead

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        b, d, t = z.shape
        x = z.permute(0, 2, 1).reshape(-1, d).float()
        if self.training and not self.frozen and not bool(self.initialized):
            self._init_codebook(x.detach())
        codes = self.nearest(x.detach())
        q = self.codebook[codes]  # looked up before the update: the codes the encoder chose
        restarted = self._ema_update(x.detach(), codes) if self.training and not self.frozen else 0
        commit = torch.mean((x - q.detach()) ** 2)
        q_st = x + (q - x).detach()
        probs = torch.bincount(codes, minlength=self.codebook_size).float() / codes.numel()
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        return QuantizerOutput(
            quantized=q_st.reshape(b, t, d).permute(0, 2, 1),
            codes=codes.reshape(b, t),
            commit_loss=commit,
            perplexity=perplexity,
            restarted=restarted,
        )

    @torch.no_grad()
    def set_codebook(self, centroids: torch.Tensor) -> None:
        """Use ``centroids`` (K, D) as the codebook, e.g. from k-means."""
        self.codebook.copy_(centroids)
        self.ema_sum.copy_(centroids)
        self.ema_count.fill_(1.0)
        self.initialized.fill_(True)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codebook vectors for codes (B, T) -> (B, D, T)."""
        return self.codebook[codes].permute(0, 2, 1)
