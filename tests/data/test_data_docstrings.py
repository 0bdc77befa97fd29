"""The examples in hesskit.data's docstrings run and print what they say."""
import doctest

import pytest

import hesskit.data
from hesskit.data import digits, labels, mnist_sample, subsets, synthetic, transforms


@pytest.mark.parametrize("module", [hesskit.data, digits, labels, mnist_sample, subsets,
                                    synthetic, transforms])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
