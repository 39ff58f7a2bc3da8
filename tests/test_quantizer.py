import torch

from tokgen.codec.quantizer import EMAVectorQuantizer


def _vq(k=4, d=2, **kw):
    vq = EMAVectorQuantizer(k, d, **kw)
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])[:k])
    vq.ema_sum.copy_(vq.codebook * 1.0)
    vq.ema_count.fill_(1.0)
    vq.initialized.fill_(True)
    return vq


def test_nearest_code_assignment():
    vq = _vq().eval()
    z = torch.tensor([[[0.5, 9.0, 0.2], [0.4, 1.0, 9.5]]])  # (B=1, D=2, T=3)
    out = vq(z)
    assert out.codes.tolist() == [[0, 1, 2]]
    assert torch.allclose(out.quantized, torch.tensor([[[0.0, 10.0, 0.0], [0.0, 0.0, 10.0]]]))


def test_nearest_in_blocks_matches_all_rows_at_once():
    """Codes are searched a block of rows at a time (bounded memory); the block size must
    not change a single code, blocks that do not divide the rows included."""
    torch.manual_seed(0)
    vq = _vq()
    vq.codebook.copy_(torch.randn_like(vq.codebook))
    x = torch.randn(1000, vq.codebook.shape[1])
    whole = vq.nearest(x, block_rows=10**6)
    assert torch.equal(vq.nearest(x, block_rows=7), whole)
    expected = torch.cdist(x, vq.codebook).argmin(dim=1)
    assert torch.equal(whole, expected)
    assert vq.nearest(x[:0]).shape == (0,)


def test_ema_update_moves_codebook_towards_assigned_mean():
    vq = _vq(decay=0.5, restart_fraction=0.0).train()
    z = torch.tensor([[[1.0, 1.0], [1.0, 1.0]]])  # two vectors (1, 1), both nearest to code 0
    vq(z)
    # count: 0.5*1 + 0.5*2 = 1.5; sum: 0.5*(0,0) + 0.5*(2,2) = (1,1); entry ~ sum/count = 2/3
    assert torch.allclose(vq.ema_count[0], torch.tensor(1.5))
    assert torch.allclose(vq.codebook[0], torch.tensor([2 / 3, 2 / 3]), atol=1e-3)
    assert torch.allclose(vq.codebook[3], torch.tensor([10.0, 10.0]), atol=1e-3)  # unused: unchanged


def test_dead_codes_are_reseeded_from_the_batch():
    torch.manual_seed(0)
    vq = _vq(decay=0.9, restart_fraction=0.5).train()
    z = torch.full((1, 2, 64), 1.0) + 0.01 * torch.randn(1, 2, 64)  # data near (1, 1): only code 0 is used
    for _ in range(30):
        out = vq(z)
    # Codes 1..3 starved and were re-seeded next to the data instead of staying far away.
    assert torch.all(torch.linalg.norm(vq.codebook - 1.0, dim=1) < 0.5)
    assert out.restarted >= 0
    unused = _vq(decay=0.9, restart_fraction=0.0).train()
    for _ in range(30):
        unused(z)
    assert torch.linalg.norm(unused.codebook[3] - 1.0) > 10  # no restart: the entry stays unused


def test_first_batch_initialises_codebook_from_data():
    vq = EMAVectorQuantizer(8, 3).train()
    z = torch.randn(2, 3, 50) + 5.0
    vq(z)
    assert bool(vq.initialized)
    assert torch.all((vq.codebook - 5.0).abs() < 5.0)


def test_straight_through_gradient_and_commitment():
    vq = _vq().train()
    z = torch.tensor([[[1.0, 9.0], [0.0, 1.0]]], requires_grad=True)
    out = vq(z)
    out.quantized.sum().backward()
    assert torch.allclose(z.grad, torch.ones_like(z))  # identity through the quantiser
    z2 = torch.tensor([[[1.0], [0.0]]], requires_grad=True)
    out2 = _vq().eval()(z2)
    assert torch.allclose(out2.commit_loss, torch.tensor(0.5))  # mean((1-0)^2, (0-0)^2)
    out2.commit_loss.backward()
    assert torch.allclose(z2.grad, torch.tensor([[[1.0], [0.0]]]))  # pulls the encoder to the code


def test_eval_mode_does_not_change_codebook():
    vq = _vq().eval()
    before = vq.codebook.clone()
    vq(torch.randn(1, 2, 20))
    assert torch.equal(before, vq.codebook)


def test_perplexity_counts_used_codes():
    vq = _vq().eval()
    z = torch.tensor([[[0.0, 10.0, 0.0, 10.0], [0.0, 0.0, 10.0, 10.0]]])
    assert torch.allclose(vq(z).perplexity, torch.tensor(4.0))
