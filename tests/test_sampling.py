"""The balanced sampler: its counts against a slow reference and torchvision's sampler, its draws, and the
three methods' settings."""

import numpy as np
import pytest
import torch

from stages.training.balanced_sampling import BalancedSampler


def reference_counts(batch_size, fraction, replace, foreground, background):
    """The rule in words: foreground gets its share (without replacement: at most what there is),
    background the rest of the batch (without replacement: at most what there is); an empty pool gives
    nothing, and with replacement leaves its share to the other."""
    share = round(batch_size * fraction)
    if foreground == 0:
        chosen_foreground = 0
    elif replace or foreground >= share:
        chosen_foreground = share
    else:
        chosen_foreground = foreground
    rest = batch_size - chosen_foreground
    if background == 0:
        return chosen_foreground, 0
    if replace or background >= rest:
        return chosen_foreground, rest
    return chosen_foreground, background


@pytest.mark.parametrize("replace", [True, False])
def test_counts_follow_the_reference(replace):
    for batch_size, fraction in ((128, 0.25), (64, 0.25), (10, 0.5), (128, 1.0)):
        sampler = BalancedSampler(batch_size, fraction, replace)
        for foreground in (0, 1, 5, 16, 31, 32, 33, 200):
            for background in (0, 1, 50, 95, 96, 97, 1000):
                expected = reference_counts(batch_size, fraction, replace, foreground, background)
                assert sampler.counts(foreground, background) == expected, (foreground, background)


def test_without_replacement_it_counts_as_torchvisions_sampler():
    """torchvision's BalancedPositiveNegativeSampler draws without replacement with the same counts."""
    from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

    theirs = BalancedPositiveNegativeSampler(64, 0.25)
    ours = BalancedSampler(64, 0.25, replace=False)
    for foreground, background in ((0, 100), (5, 100), (16, 100), (40, 10), (40, 0), (3, 2)):
        labels = torch.cat([torch.ones(foreground), torch.zeros(background)]).long()
        positive, negative = theirs([labels])
        assert ours.counts(foreground, background) == (int(positive[0].sum()), int(negative[0].sum()))


def test_draws_come_from_their_pools_foreground_first():
    """Ten foreground rows for a share of 32: drawn 32 times with replacement, each once without."""
    foreground, background = np.arange(0, 10), np.arange(100, 400)
    for replace, drawn in ((True, 32), (False, 10)):
        rows = BalancedSampler(128, 0.25, replace)(foreground, background, np.random.default_rng(0))
        assert rows.dtype == np.int64 and len(rows) == 128
        assert np.isin(rows[:drawn], foreground).all() and np.isin(rows[drawn:], background).all()
        if not replace:
            assert len(np.unique(rows)) == len(rows)


def test_without_replacement_a_small_image_gives_a_smaller_batch():
    rows = BalancedSampler(64, 0.25, replace=False)(np.arange(3), np.arange(10, 20), np.random.default_rng(0))
    assert sorted(rows.tolist()) == [0, 1, 2, *range(10, 20)]


def test_with_replacement_every_row_is_drawn_about_equally():
    foreground = np.arange(4)
    rng = np.random.default_rng(1)
    rows = np.concatenate(
        [BalancedSampler(8, 1.0, True)(foreground, foreground[:0], rng) for _ in range(2000)]
    )
    counts = np.bincount(rows, minlength=4) / len(rows)
    np.testing.assert_allclose(counts, 0.25, atol=0.02)


def test_the_same_generator_gives_the_same_batch():
    sampler = BalancedSampler(128, 0.25, replace=True)
    first = sampler(np.arange(50), np.arange(50, 900), np.random.default_rng([3, 7]))
    second = sampler(np.arange(50), np.arange(50, 900), np.random.default_rng([3, 7]))
    np.testing.assert_array_equal(first, second)
