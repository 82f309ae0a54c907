r"""Storage of a quantized model: packed low-bit weights and the parameters that go with them."""
from __future__ import annotations

import math

from ._checks import check_count
from .fake_quant import FixedFakeQuantize, QuantSequential, QuantStage

SCALE_BYTES = 4  # float32 scales
ZERO_POINT_BYTES = 4  # int32 activation zero points
BIAS_BYTES = 4  # int32 bias codes (or float32 biases when the input is not quantized)


def packed_bytes(n_values: int, bits: int) -> int:
    r"""Bytes of ``n_values`` codes of ``bits`` bits packed densely:
    :math:`\lceil n b / 8 \rceil` (int4: two codes per byte, int2: four).

    Checked by ``tests/optim/quant/test_quant_size.py::test_packed_bytes``.

    >>> packed_bytes(61470, 8), packed_bytes(61470, 4), packed_bytes(61470, 2)
    (61470, 30735, 15368)
    """
    n_values = check_count(n_values, "n_values", minimum=0)
    bits = check_count(bits, "bits")
    return math.ceil(n_values * bits / 8)


def quantized_model_bytes(model: QuantSequential) -> dict[str, int | float]:
    r"""Bytes of a converted model as deployed:

    .. math::
        B = \sum_{\text{layers}} \Big(\lceil N_W b_w / 8 \rceil + 4 C_{out} + 4 N_b\Big)
            + 8 A

    packed weight codes, one float32 scale per output channel (symmetric weights store no
    zero point), int32 biases, and a float32 scale plus an int32 zero point for each of the
    :math:`A` quantized activations (input and layer outputs). ``fp32`` is 4 bytes per
    parameter of the float model; ``ratio = total / fp32``.

    Checked by ``tests/optim/quant/test_quant_size.py::test_quantized_model_bytes_int8``.
    """
    if not isinstance(model, QuantSequential) or not model.frozen:
        raise TypeError("model must be a frozen QuantSequential (the output of convert)")
    bits = model.config.weight_bits
    sizes = {"fp32": 0, "weights": 0, "weight_scales": 0, "biases": 0, "activation_qparams": 0}
    for module in model.modules():
        if isinstance(module, QuantStage):
            weight, bias = module.float_weight(), module.float_bias()
            sizes["fp32"] += 4 * (weight.size + (0 if bias is None else bias.size))
            sizes["weights"] += packed_bytes(weight.size, bits)
            sizes["weight_scales"] += SCALE_BYTES * module.weight_quant.scale.size
            sizes["biases"] += 0 if bias is None else BIAS_BYTES * bias.size
            if module.output_quant is not None:
                sizes["activation_qparams"] += SCALE_BYTES + ZERO_POINT_BYTES
    if isinstance(model[0], FixedFakeQuantize):
        sizes["activation_qparams"] += SCALE_BYTES + ZERO_POINT_BYTES
    sizes["total"] = sum(v for k, v in sizes.items() if k != "fp32")
    sizes["ratio"] = sizes["total"] / sizes["fp32"]
    return sizes
