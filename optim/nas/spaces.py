"""The two shipped search spaces: MLPs and small CNNs for 1x28x28 inputs (MNIST).

Both use a fixed-length encoding: genes exist for ``max_blocks`` blocks and ``n_blocks``
says how many are used (genes of unused blocks are carried along and may change without
changing the network; ``canonical_arch`` resets them, so the spaces' keys identify models and
their mutations always change the model). Gene names are ``<gene>_<block>`` with blocks
counted from 0.

MLP (input flattened to 784 features), block ``i < n_blocks``::

    Linear(width_{i-1} -> width_i) -> activation [-> + block input if skip_i]

CNN, block ``i < n_blocks`` (stride-1 convolution; "same" padding is ``kernel // 2``)::

    Conv2d(channels_{i-1} -> channels_i, kernel_i, padding) -> activation
    [-> + block input if skip_i] [-> MaxPool2d(2) / AvgPool2d(2) if pool_i]

then Flatten -> [Linear(fc_width) -> activation if fc_width > 0] -> Linear(10).
A skip is an identity shortcut, so it is valid only where the block keeps its input's shape;
block 0 has no skip gene. The CNN's constraint rejects architectures whose feature map
shrinks below 1x1.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

from .space import Choice, SearchSpace

__all__ = ["conv_output_size", "cnn_feature_shape", "mlp_skips_valid", "cnn_valid",
           "canonical_arch", "mlp_space", "cnn_space"]

ACTIVATIONS = ("relu", "tanh", "sigmoid")
POOLS = ("none", "max", "avg")
PADDINGS = ("same", "valid")


def _int_options(values: Sequence[Any], name: str, low: int = 1, odd: bool = False) -> tuple:
    values = tuple(values)
    if not values:
        raise ValueError(f"{name} must not be empty")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < low or (odd and v % 2 == 0):
            kind = "odd integers" if odd else "integers"
            raise ValueError(f"{name} must be {kind} >= {low}, got {v!r} in {values!r}")
    return values


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0,
                     dilation: int = 1) -> int:
    """Output length of a convolution or pooling window along one spatial axis.

    .. math:: \\left\\lfloor \\frac{n + 2p - d(k - 1) - 1}{s} \\right\\rfloor + 1

    May be < 1, meaning the window does not fit. Source: PyTorch ``Conv2d`` / ``MaxPool2d``
    shape formula (``ceil_mode=False``). Tested by
    ``tests/optim/nas/test_nas_spaces.py::test_conv_output_size_matches_sliding_windows``.
    """
    for name, value, low in (("size", size, 0), ("kernel_size", kernel_size, 1),
                             ("stride", stride, 1), ("padding", padding, 0),
                             ("dilation", dilation, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def cnn_feature_shape(arch: dict, input_size: int = 28,
                      in_channels: int = 1) -> tuple[int, int, int]:
    """(channels, height, width) of the CNN's last feature map, before Flatten.

    Raises ValueError when the map shrinks below 1x1 at some block (the configuration cannot
    be built). Tested by ``tests/optim/nas/test_nas_spaces.py::test_cnn_constraint_is_spatial_check``.
    """
    size, channels = input_size, in_channels
    for i in range(arch["n_blocks"]):
        kernel = arch[f"kernel_{i}"]
        size = conv_output_size(size, kernel, padding=kernel // 2 if arch["padding"] == "same" else 0)
        if size >= 1 and arch[f"pool_{i}"] != "none":
            size = conv_output_size(size, 2, stride=2)
        if size < 1:
            raise ValueError(f"feature map shrinks below 1x1 at block {i} of {arch!r}")
        channels = arch[f"channels_{i}"]
    return channels, size, size


def mlp_skips_valid(arch: dict) -> bool:
    """Constraint: a used skip joins blocks of equal width."""
    return all(arch[f"width_{i}"] == arch[f"width_{i - 1}"]
               for i in range(1, arch["n_blocks"]) if arch[f"skip_{i}"])


def cnn_valid(arch: dict, input_size: int = 28) -> bool:
    """Constraint: the feature map stays >= 1x1 and every used skip keeps the block's shape."""
    try:
        cnn_feature_shape(arch, input_size)
    except ValueError:
        return False
    for i in range(1, arch["n_blocks"]):
        keeps_size = arch["padding"] == "same" or arch[f"kernel_{i}"] == 1
        if arch[f"skip_{i}"] and not (keeps_size and arch[f"channels_{i}"] == arch[f"channels_{i - 1}"]):
            return False
    return True


def _block_of(name: str) -> int | None:
    """The block a gene named ``<gene>_<block>`` belongs to; None for global genes."""
    head, _, tail = name.rpartition("_")
    return int(tail) if head and tail.isdigit() else None


def canonical_arch(arch: dict, first: dict) -> dict:
    """``arch`` with the genes that build nothing set to their first option (``first`` maps
    gene names to it): the genes of blocks ``>= n_blocks`` and, in a CNN whose used kernels
    are all 1x1, ``padding``. Two architectures build the same model exactly when their
    canonical forms are equal. Tested by
    ``tests/optim/nas/test_nas_build.py::test_same_canonical_form_iff_same_model``.
    """
    canonical = dict(arch)
    for name, option in first.items():
        block = _block_of(name)
        if block is not None and block >= arch["n_blocks"]:
            canonical[name] = option
    if "padding" in arch and all(arch[f"kernel_{i}"] == 1 for i in range(arch["n_blocks"])):
        canonical["padding"] = first["padding"]
    return canonical


def _space(genes: list[Choice], constraint: Callable[[dict], bool], build: Callable) -> SearchSpace:
    first = {gene.name: gene.options[0] for gene in genes}
    return SearchSpace(genes, constraints=(constraint,), build=build,
                       canonical=partial(canonical_arch, first=first))


def _block_genes(max_blocks: int, per_block: dict[str, tuple]) -> list[Choice]:
    if isinstance(max_blocks, bool) or not isinstance(max_blocks, int) or max_blocks < 1:
        raise ValueError(f"max_blocks must be a positive integer, got {max_blocks!r}")
    genes = [Choice("n_blocks", tuple(range(1, max_blocks + 1)))]
    for i in range(max_blocks):
        genes += [Choice(f"{name}_{i}", options) for name, options in per_block.items()]
        if i > 0:
            genes.append(Choice(f"skip_{i}", (False, True)))
    return genes


def mlp_space(max_blocks: int = 4, widths: Sequence[int] = (16, 32, 64, 128, 256),
              activations: Sequence[str] = ACTIVATIONS,
              build: Callable[[dict], Any] | None = None) -> SearchSpace:
    """MLPs on flattened 28x28 inputs: ``n_blocks``, ``width_i``, ``skip_i``, ``activation``.

    Constraint: ``mlp_skips_valid``; canonical form: ``canonical_arch``. ``build`` (used by ``decode``) defaults to
    ``optim.nas.build.build_mlp``. Tested by
    ``tests/optim/nas/test_nas_spaces.py::test_shipped_spaces_sample_valid_architectures``.
    """
    genes = _block_genes(max_blocks, {"width": _int_options(widths, "widths")})
    genes.append(Choice("activation", tuple(activations)))
    if build is None:
        from .build import build_mlp  # build imports this module
        build = build_mlp
    return _space(genes, mlp_skips_valid, build)


def cnn_space(max_blocks: int = 4, channels: Sequence[int] = (4, 8, 16, 32),
              kernel_sizes: Sequence[int] = (1, 3, 5, 7),
              fc_widths: Sequence[int] = (0, 32, 64, 128),
              activations: Sequence[str] = ACTIVATIONS, input_size: int = 28,
              build: Callable[[dict], Any] | None = None) -> SearchSpace:
    """Small CNNs on 1x``input_size``x``input_size`` inputs.

    Genes: ``n_blocks``, ``padding`` ("same"/"valid"), per block ``channels_i``, ``kernel_i``,
    ``pool_i`` ("none"/"max"/"avg"), ``skip_i``; then ``activation`` and ``fc_width``
    (0: no hidden linear layer). Constraint: ``cnn_valid`` (spatial size >= 1, skips keep
    shape); canonical form: ``canonical_arch``. ``build`` (used by ``decode``) defaults to ``optim.nas.build.build_cnn`` for
    ``input_size``. Tested by
    ``tests/optim/nas/test_nas_spaces.py::test_shipped_spaces_sample_valid_architectures``.
    """
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise ValueError(f"input_size must be a positive integer, got {input_size!r}")
    per_block = {"channels": _int_options(channels, "channels"),
                 "kernel": _int_options(kernel_sizes, "kernel_sizes", odd=True),
                 "pool": POOLS}
    genes = _block_genes(max_blocks, per_block)
    genes.insert(1, Choice("padding", PADDINGS))
    genes += [Choice("activation", tuple(activations)),
              Choice("fc_width", _int_options(fc_widths, "fc_widths", low=0))]
    if build is None:
        from .build import build_cnn  # build imports this module
        build = partial(build_cnn, input_size=input_size)
    return _space(genes, partial(cnn_valid, input_size=input_size), build)
