"""Random streams have purposes: streams of different purposes never coincide, even for the integer
tuples that collided before the purpose tags (dropout of rank 0 at micro-step k vs the noise of sample k
of epoch 0), and a stream depends only on its tuple."""

from __future__ import annotations

import itertools

import torch

from hpcdiff.seeding import Purpose, generator, mix_seed


def draw(*parts: int) -> torch.Tensor:
    return torch.randn(64, generator=generator(*parts))


def test_the_old_collision_is_gone():
    seed = 0
    for k in range(8):
        dropout = draw(seed, Purpose.DROPOUT, 0, k)  # (seed, DROPOUT, rank, micro-step)
        noise = draw(seed, Purpose.NOISE, 0, k)  # (seed, NOISE, epoch, sample index)
        assert not torch.equal(dropout, noise)
    # without tags the two tuples are the same tuple, hence the same stream
    assert torch.equal(draw(seed, 0, 3), draw(seed, 0, 3))


def test_purposes_give_distinct_uncorrelated_streams():
    purposes = list(Purpose)
    seeds = {(p, a, b): mix_seed(0, p, a, b) for p in purposes for a in range(4) for b in range(4)}
    assert len(set(seeds.values())) == len(seeds)  # no two (purpose, ...) tuples share a seed
    for p, q in itertools.combinations(purposes, 2):
        x, y = draw(0, p, 1, 2), draw(0, q, 1, 2)
        corr = float(torch.corrcoef(torch.stack([x, y]))[0, 1])
        assert abs(corr) < 0.5, (p, q, corr)


def test_a_stream_depends_only_on_its_tuple():
    assert torch.equal(draw(7, Purpose.MEMBER, 11000, 3), draw(7, Purpose.MEMBER, 11000, 3))
    assert not torch.equal(draw(7, Purpose.MEMBER, 11000, 3), draw(8, Purpose.MEMBER, 11000, 3))
