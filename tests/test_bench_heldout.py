"""The paired bits/byte comparison the data benchmarks report (benchmarks/heldout.py)."""

import math
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from heldout import comparison_table, paired_difference


def test_equal_lengths_reduce_to_the_standard_error_of_a_mean():
    rng = random.Random(0)
    n_bytes = [100] * 50
    a = [rng.uniform(150, 250) for _ in n_bytes]
    b = [x + rng.gauss(-5, 10) for x in a]
    diff, se = paired_difference(a, b, n_bytes)
    per_doc = [(x - y) / 100 for x, y in zip(a, b, strict=True)]
    assert math.isclose(diff, statistics.mean(per_doc))
    assert math.isclose(se, statistics.stdev(per_doc) / math.sqrt(len(per_doc)))


def test_a_constant_ratio_has_no_error_and_long_documents_weigh_more():
    n_bytes = [10, 1000, 50]
    diff, se = paired_difference([2.0 * n for n in n_bytes], [1.5 * n for n in n_bytes], n_bytes)
    assert math.isclose(diff, 0.5) and se < 1e-12
    diff, _ = paired_difference([20.0, 1000.0], [10.0, 1000.0], [10, 1000])
    assert math.isclose(diff, 10 / 1010)  # a ratio of totals, not a mean of per-document ratios


def test_table_rows_per_group():
    groups = {"all": ["ab", "你"], "en": ["ab"]}
    bits = {"x": {"all": [4.0, 9.0], "en": [4.0]}, "y": {"all": [2.0, 6.0], "en": [2.0]}}
    table = comparison_table(groups, bits, "x", "y")
    assert "| all | 2 | 5 | 2.6000 | 1.6000 | -1.0000 (" in table
    assert "| en | 1 | 2 | 2.0000 | 1.0000 | -1.0000 (nan) |" in table  # one document: no error estimate
