"""optim.quant: quantization as pure functions on NumPy arrays.

- ``affine``: ``qparams``, ``quantize``, ``dequantize``, ``fake_quantize`` (uniform affine or
  symmetric, per tensor or per channel, PyTorch's conventions);
- ``ranges`` / ``rounding``: integer ranges of b-bit codes, storage dtypes, rounding modes;
- ``pow2``, ``fixed_point``, ``binary``: power-of-two, Qm.n, BinaryConnect, XNOR-Net and TWN
  weights;
- ``pact`` / ``dorefa``: PACT's learned activation clipping and DoReFa-Net's k-bit weights and
  activations;
- ``equalize``: data-free quantization (cross-layer equalization, bias correction);
- ``adaround``: AdaRound's learned rounding of weights;
- ``bn_fold_qat``: QAT with BatchNorm folded on batch statistics (σ/σ_B correction);
- ``calibration`` / ``observers``: clipping-range selection (min-max, moving average,
  percentile of each tail or of |x|, MSE, NVIDIA's and MXNet's KL) and the observers
  wrapping it;
- ``requant``: fixed-point multipliers and integer-only requantization (Jacob et al. 2018);
- ``sharing`` / ``huffman``: Deep Compression's k-means weight sharing and size accounting;
- ``ste``: fake quantization as differentiable ops (clipped STE, LSQ);
- ``fake_quant``: fake-quantization modules and ``QuantStage``, a quantized layer;
- ``qconfig`` / ``ptq`` / ``qat``: ``prepare`` → ``calibrate`` → ``convert`` and
  ``prepare_qat`` on minnet models;
- ``int_linear`` / ``int_conv`` / ``integer_model``: integer-only kernels (NumPy reference and
  Numba fast path) and a runner for converted models;
- ``model_sharing`` / ``size``: weight sharing on models with fine-tuning; model bytes;
- ``mixed``: per-layer sensitivity and greedy bit widths under a size budget (mixed precision).
"""
from .adaround import (
    adaround_init,
    adaround_layer,
    adaround_model,
    adaround_regularizer,
    adaround_weights,
    beta_schedule,
    rectified_sigmoid,
)
from .affine import dequantize, fake_quantize, qparams, quantize
from .binary import binarize, binary_connect, binary_connect_mask, ternarize
from .calibration import (
    SignedHistogram,
    abs_percentile_threshold,
    histogram_quantile,
    kl_divergences_mxnet,
    kl_divergences_nvidia,
    kl_threshold_mxnet,
    kl_threshold_nvidia,
    mse_clip_range,
    squared_error,
    tail_percentile_range,
)
from .bn_fold_qat import BnFoldQuantStage
from .dorefa import (
    dorefa_activation,
    dorefa_activation_ste,
    dorefa_weight,
    dorefa_weight_codes,
    dorefa_weight_ste,
    quantize_k,
)
from .equalize import (
    bias_correct,
    bias_correction,
    bn_input_means,
    equalization_scales,
    equalize_model,
    equalize_pair,
    relu_gaussian_mean,
)
from .fake_quant import (
    BinaryFakeQuantize,
    DoReFaActivationQuantize,
    DoReFaWeightQuantize,
    FakeQuantize,
    FixedFakeQuantize,
    LSQFakeQuantize,
    PACTFakeQuantize,
    QuantSequential,
    QuantStage,
)
from .fixed_point import fixed_point_quantize, qformat_range
from .huffman import huffman_code_lengths, sharing_size_bits
from .int_conv import quantized_conv2d
from .int_linear import quantized_linear
from .integer_model import IntegerModel, max_pool2d_codes
from .mixed import (
    greedy_bit_allocation,
    layer_sensitivity,
    layer_weight_counts,
    mixed_model_bytes,
    quantizable_layers,
    quantize_mixed,
    weight_bytes,
)
from .model_sharing import SharedLookup, SharedWeights, share_weights, sharing_sizes
from .observers import (
    HistogramKLObserver,
    HistogramL2Observer,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
    histogram_l2_error,
    histogram_l2_search,
)
from .pact import PACTQuantize, pact_clip, pact_fake_quantize, pact_gradients, pact_quantize
from .pow2 import pow2_quantize
from .ptq import PreparedModel, calibrate, convert, prepare
from .qat import prepare_qat
from .qconfig import OBSERVERS, QConfig
from .ranges import check_bits, int_range, quant_dtype
from .requant import (
    quantize_bias,
    quantize_multiplier,
    requantize,
    rounding_doubling_high_mul,
    rounding_right_shift,
)
from .rounding import ROUNDING_MODES, round_values
from .sharing import (centroid_gradients, kmeans_codebook, nearest_centroid, shared_weights,
                      sparse_kmeans_codebook)
from .size import packed_bytes, quantized_model_bytes
from .ste import (
    FakeQuantizeSTE,
    LSQQuantize,
    fake_quantize_ste,
    lsq_fake_quantize,
    lsq_grad_scale,
    lsq_gradients,
    lsq_initial_step,
    lsq_quantize,
    ste_mask,
    straight_through,
)

__all__ = [
    "qparams", "quantize", "dequantize", "fake_quantize",
    "int_range", "quant_dtype", "check_bits", "ROUNDING_MODES", "round_values",
    "pow2_quantize", "fixed_point_quantize", "qformat_range", "binarize", "ternarize",
    "binary_connect", "binary_connect_mask",
    "quantize_k", "dorefa_weight", "dorefa_weight_codes", "dorefa_weight_ste",
    "dorefa_activation", "dorefa_activation_ste",
    "pact_clip", "pact_quantize", "pact_gradients", "pact_fake_quantize", "PACTQuantize",
    "equalization_scales", "equalize_pair", "equalize_model", "relu_gaussian_mean",
    "bias_correction", "bias_correct", "bn_input_means",
    "rectified_sigmoid", "adaround_init", "adaround_regularizer", "beta_schedule",
    "adaround_weights", "adaround_layer", "adaround_model", "BnFoldQuantStage",
    "squared_error", "mse_clip_range", "histogram_quantile", "tail_percentile_range",
    "abs_percentile_threshold", "kl_divergences_nvidia", "kl_threshold_nvidia",
    "kl_divergences_mxnet", "kl_threshold_mxnet",
    "SignedHistogram",
    "Observer", "MinMaxObserver", "MovingAverageMinMaxObserver", "PercentileObserver",
    "MSEObserver", "HistogramKLObserver", "HistogramL2Observer", "histogram_l2_error",
    "histogram_l2_search",
    "quantize_multiplier", "requantize", "quantize_bias",
    "rounding_doubling_high_mul", "rounding_right_shift",
    "kmeans_codebook", "sparse_kmeans_codebook", "nearest_centroid", "shared_weights",
    "centroid_gradients",
    "huffman_code_lengths", "sharing_size_bits",
    "ste_mask", "fake_quantize_ste", "FakeQuantizeSTE", "lsq_quantize", "lsq_gradients",
    "lsq_grad_scale", "lsq_initial_step", "lsq_fake_quantize", "LSQQuantize", "straight_through",
    "FixedFakeQuantize", "FakeQuantize", "LSQFakeQuantize", "QuantStage", "QuantSequential",
    "PACTFakeQuantize", "DoReFaActivationQuantize", "BinaryFakeQuantize", "DoReFaWeightQuantize",
    "QConfig", "OBSERVERS", "PreparedModel", "prepare", "calibrate", "convert", "prepare_qat",
    "quantized_linear", "quantized_conv2d", "IntegerModel", "max_pool2d_codes",
    "SharedLookup", "SharedWeights", "share_weights", "sharing_sizes",
    "packed_bytes", "quantized_model_bytes",
    "quantizable_layers", "layer_weight_counts", "layer_sensitivity", "greedy_bit_allocation",
    "weight_bytes", "quantize_mixed", "mixed_model_bytes",
]
