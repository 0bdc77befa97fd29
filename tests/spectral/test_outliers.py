"""count_outliers: the histogram-gap rule on spectra with known outliers."""
import pytest
import torch

from hesskit.spectral import count_outliers


def test_counts_the_eigenvalues_above_the_widest_top_gaps():
    bulk = torch.linspace(-0.1, 0.2, 200)  # spacing 0.0015, finer than any bin below
    assert count_outliers(torch.cat([torch.tensor([10.0, 9.0, 8.5]), bulk])) == 3
    assert count_outliers(torch.cat([bulk, torch.tensor([5.0])])) == 1  # any order
    assert count_outliers(bulk) == 0  # spacing below one bin (0.3 / 50)
    assert count_outliers([1.0]) == 0


def test_gaps_in_the_lower_half_do_not_count():
    values = torch.cat([torch.linspace(0.0, 1.0, 20), torch.tensor([-50.0])])
    assert count_outliers(values) == 0


def test_bins_set_the_gap_threshold():
    values = [1.0, 0.9, 0.0, -0.05, -0.1, -0.15]  # range 1.15; top gaps 0.1 and 0.9
    assert count_outliers(values, bins=2) == 2   # threshold 0.575: only the 0.9 gap
    assert count_outliers(values, bins=20) == 2  # threshold 0.0575: 0.1 and 0.9 gaps
    assert count_outliers(values, bins=1) == 0
    with pytest.raises(ValueError, match="bins"):
        count_outliers(values, bins=0)

