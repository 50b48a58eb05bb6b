"""Growth: stages, fades, samples and learning rate as pure functions of the batch index (train/growth.py)."""
from __future__ import annotations

import pytest
import torch

from progressive_swap.model.blocks import downsample2x, upsample2x
from progressive_swap.train.growth import GrowthSchedule
from progressive_swap.train.module import fade_target

STAGES = [
    dict(res=16, images=100, batch=5),
    dict(res=32, images=60, fade=40, batch=3),
    dict(res=64, images=30, fade=30, batch=2),
]


def test_phases_cover_the_images_asked_for():
    s = GrowthSchedule(STAGES, identities=2, world_size=1)
    assert [(p.res, p.fading) for p in s.phases] == [(16, False), (32, True), (32, False), (64, True), (64, False)]
    for p, want in zip(s.phases, [100, 40, 60, 30, 30]):
        got = p.batches * p.batch * 2
        assert want <= got < want + p.batch * 2
    assert s.total_batches == sum(p.batches for p in s.phases)


def test_alpha_rises_from_zero_within_fades_and_is_one_otherwise():
    s = GrowthSchedule(STAGES, identities=2)
    alphas = [s.at(b).alpha for b in range(s.total_batches)]
    for p in s.phases:
        a = alphas[p.first_batch : p.end_batch]
        if p.fading:
            assert a[0] == 0.0 and all(x < y for x, y in zip(a, a[1:])) and a[-1] < 1.0
        else:
            assert all(x == 1.0 for x in a)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_samples_are_disjoint_and_contiguous_across_batches_and_ranks(world):
    s = GrowthSchedule(STAGES, identities=2, world_size=world)
    seen = []
    for b in range(s.total_batches):
        for r in range(world):
            idx = list(s.samples(b, r))
            assert len(idx) == s.at(b).phase.batch
            seen += idx
    assert sorted(seen) == list(range(len(seen)))


def test_images_seen_counts_every_process():
    s = GrowthSchedule(STAGES, identities=2, world_size=2)
    assert s.images_seen(0) == 0
    assert s.images_seen(1) == 5 * 2 * 2
    p = s.phases[1]
    assert s.images_seen(p.first_batch + 1) == s.phases[0].batches * 20 + 3 * 2 * 2
    last = s.phases[-1]
    assert s.images_seen(s.total_batches) == s.images_seen(s.total_batches - 1) + last.batch * 2 * 2


def test_bad_schedules_are_rejected():
    with pytest.raises(ValueError, match="double"):
        GrowthSchedule([dict(res=16, images=10), dict(res=48, images=10)])
    with pytest.raises(ValueError):
        GrowthSchedule([])
    with pytest.raises(ValueError):
        GrowthSchedule([dict(res=16, images=0)])


def test_learning_rate_anneals_linearly_over_the_stable_phase_only():
    s = GrowthSchedule(
        [
            dict(res=16, images=40, batch=2, lr=1e-3, lr_end=1e-4),
            dict(res=32, images=40, fade=20, batch=2, lr=5e-4, lr_end=5e-5),
        ]
    )
    low, fade, high = s.phases
    assert [p.batches for p in s.phases] == [10, 5, 10]
    lrs = [s.at(b).lr for b in range(s.total_batches)]
    assert lrs[low.end_batch - 1] == pytest.approx(1e-4) and lrs[high.end_batch - 1] == pytest.approx(5e-5)
    assert lrs[0] == pytest.approx(1e-3 - 9e-4 / 10)  # one step along
    assert all(a > b for a, b in zip(lrs[:9], lrs[1:10]))  # falling within the stage
    assert all(lr == 5e-4 for lr in lrs[fade.first_batch : fade.end_batch])  # a fade keeps its rate
    assert all(a > b for a, b in zip(lrs[15:], lrs[16:]))
    constant = GrowthSchedule([dict(res=16, images=40, batch=2, lr=1e-3)])
    assert {constant.at(b).lr for b in range(constant.total_batches)} == {1e-3}
    with pytest.raises(ValueError, match="bad stage"):
        GrowthSchedule([dict(res=16, images=10, lr_end=0.0)])
    # Saved and rebuilt with the schedule (checkpoints carry state()).
    assert GrowthSchedule(**s.state()).at(7).lr == s.at(7).lr


def test_fade_target_matches_network_blending():
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(fade_target(x, 1.0), x)
    torch.testing.assert_close(fade_target(x, 0.0), upsample2x(downsample2x(x)))
    mid = fade_target(x, 0.25)
    torch.testing.assert_close(mid, 0.75 * upsample2x(downsample2x(x)) + 0.25 * x)
