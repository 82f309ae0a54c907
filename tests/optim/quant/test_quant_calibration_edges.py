"""Calibration formulas at their edges, by hand: the squared error's default (affine) range,
and the histogram quantile at q = 0 and 100, outside [0, 100] and on an empty histogram."""
import numpy as np
import pytest

from optim.quant.calibration import histogram_quantile, squared_error


def test_squared_error_is_affine_unless_asked():
    """Rows 0, 1, 2, 3 on codes 0..3 with the range [0, 3]: affine scale 1 puts every value on
    the grid (error 0); the symmetric grid (scale 2, zero point 2) misses 1 and 3 by 1 each."""
    rows = np.array([[0.0, 1.0, 2.0, 3.0]])
    low, high = np.array([0.0]), np.array([3.0])
    assert squared_error(rows, low, high, 0, 3).tolist() == [0.0]
    assert squared_error(rows, low, high, 0, 3, symmetric=True).tolist() == [2.0]


def test_histogram_quantile_edges():
    """Counts 0, 2, 2, 0 over [0, 1, 2, 3, 4]: q = 0 is the lower edge of the first non-empty
    bin (1), q = 100 the upper edge of the last (3), q = 50 the middle (2)."""
    counts, edges = np.array([0, 2, 2, 0]), np.arange(5.0)
    assert histogram_quantile(counts, edges, 0) == 1.0
    assert histogram_quantile(counts, edges, 100) == 3.0
    assert histogram_quantile(counts, edges, 50) == 2.0
    for q in (-0.5, 100.5):
        with pytest.raises(ValueError, match="q must be in"):
            histogram_quantile(counts, edges, q)
    with pytest.raises(ValueError, match="at least one observation"):
        histogram_quantile(np.zeros(4), edges, 50)


def test_tail_percentile_range_by_hand():
    """Counts 0, 2, 2, 0 over [0, 1, 2, 3, 4], p = 75: each tail clipped at 25 % of the mass,
    Q_25 = 1 + 1/2 and Q_75 = 2 + 1/2."""
    from optim.quant.calibration import tail_percentile_range
    assert tail_percentile_range(np.array([0, 2, 2, 0]), np.arange(5.0), 75) == (1.5, 2.5)
