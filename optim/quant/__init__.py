"""optim.quant: quantization formulas, observers, fixed-point requantization, weight sharing."""
from .affine import dequantize, fake_quantize, qparams, quantize
from .ranges import int_range, quant_dtype
from .rounding import ROUNDING_MODES, round_values
from .binary import binarize, ternarize
from .fixed_point import fixed_point_quantize, qformat_range
from .pow2 import pow2_quantize
from .calibration import SignedHistogram, histogram_quantile, kl_clip_bins, mse_clip_range, squared_error
from .observers import (
    HistogramKLObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
)
from .requant import quantize_bias, quantize_multiplier, requantize
