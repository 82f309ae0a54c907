"""Bad ONNX input (issue 15 classes 1, 4 and 6): malformed window attributes, oversized
declarations and unsupported ops each end in one clear error from ``from_onnx``, never a crash,
a silent fix-up or a large allocation; two hypothesis fuzzers (random attribute values, random
byte edits of a valid file) run in a memory-capped subprocess (``fuzz_helpers``), so a
segfault or an allocation beyond the cap fails the test."""
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from fuzz_helpers import check_isolated  # noqa: E402
from optim.graph import execute, from_onnx  # noqa: E402
from optim.graph.onnx_import import MAX_FOLDED_ELEMENTS  # noqa: E402

HERE = Path(__file__)


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _info(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def _conv(**attrs):
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    return _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv", **attrs)],
                  [_info("x", [1, 1, 8, 8])], [_info("y", None)], [w])


def _pool(op="MaxPool", **attrs):
    attrs.setdefault("kernel_shape", [3, 3])
    return _model([helper.make_node(op, ["x"], ["y"], name="pool", **attrs)],
                  [_info("x", [1, 1, 8, 8])], [_info("y", None)])


BAD_ATTRIBUTES = {
    "conv kernel_shape 0": (_conv(kernel_shape=[0, 3]), "kernel_shape"),
    "conv stride 0": (_conv(strides=[0, 1]), "strides"),
    "conv dilation 0": (_conv(dilations=[0, 1]), "dilations"),
    "conv negative pads": (_conv(pads=[-1, 0, 0, 0]), "pads"),
    "conv three pads": (_conv(pads=[1, 1, 1]), "pads"),
    "conv group 0": (_conv(group=0), "groups"),
    "conv bad auto_pad": (_conv(auto_pad="SIDEWAYS"), "auto_pad"),
    "pool kernel 0": (_pool(kernel_shape=[0, 2]), "kernel_shape"),
    "pool missing kernel": (_model([helper.make_node("MaxPool", ["x"], ["y"], name="pool")],
                                   [_info("x", [1, 1, 8, 8])], [_info("y", None)]), "kernel_shape"),
    "pool stride 0": (_pool(strides=[1, 0]), "strides"),
    "pool negative pads": (_pool(pads=[0, -1, 0, 0]), "pads"),
    "average pool negative pads": (_pool("AveragePool", pads=[-1, -1, -1, -1]), "pads"),
    "pool pads = kernel": (_pool(pads=[3, 0, 0, 0]), "pads"),
    "pool huge pads (heap read)": (_pool(kernel_shape=[1, 1], strides=[1000, 1000],
                                         pads=[100] * 4), "pads"),
    "pool window larger than input": (_pool(kernel_shape=[9, 9]), "does not fit"),
}


@pytest.mark.parametrize("name", list(BAD_ATTRIBUTES))
def test_bad_window_attribute_is_one_clear_error(name):
    model, word = BAD_ATTRIBUTES[name]
    with pytest.raises(ValueError, match=word) as info:
        from_onnx(model)
    assert "conv" in str(info.value) or "pool" in str(info.value)


def test_unsupported_op_is_named_with_its_node():
    m = _model([helper.make_node("NonMaxSuppression", ["x"], ["y"], name="nms")],
               [_info("x", [1, 4])], [_info("y", None)])
    with pytest.raises(NotImplementedError, match=r"'NonMaxSuppression'.*'nms'"):
        from_onnx(m)


def test_initializer_larger_than_its_data_is_refused_before_allocation():
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1 << 20, 1 << 20],
                         raw_data=b"\0" * 16)
    m = _model([helper.make_node("Add", ["x", "w"], ["y"])], [_info("x", [1])], [_info("y", None)],
               [tensor])
    with pytest.raises(ValueError, match="declares .* elements"):
        from_onnx(m)


def test_huge_constants_are_views_and_computing_on_them_is_capped():
    """ConstantOfShape and Expand of a constant to 2^40 elements import as read-only broadcast
    views (no memory); an op that would compute such a constant at import is refused."""
    import tracemalloc

    shape = numpy_helper.from_array(np.array([1 << 20, 1 << 20], np.int64), "s")
    one = numpy_helper.from_array(np.ones(1, np.float32), "one")
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["c"]),
             helper.make_node("Expand", ["one", "s"], ["e"])]
    tracemalloc.start()
    graph = from_onnx(_model(nodes, [], [_info("c", None), _info("e", None)], [shape, one]))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 << 20
    assert graph.constants["c"].shape == graph.constants["e"].shape == (1 << 20, 1 << 20)
    nodes.append(helper.make_node("Add", ["c", "e"], ["y"], name="big"))
    with pytest.raises(ValueError, match="big.*MAX_FOLDED_ELEMENTS"):
        from_onnx(_model(nodes, [], [_info("y", None)], [shape, one]))
    assert MAX_FOLDED_ELEMENTS < (1 << 40)


def test_negative_input_dimension_is_refused():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_info("x", [-3, 2])], [_info("y", None)])
    with pytest.raises(ValueError, match="non-negative"):
        from_onnx(m)


def test_dilation_and_pads_are_never_fixed_silently():
    """A valid dilated conv with asymmetric pads computes what onnxruntime computes (issue 15
    class 6: ``dilations=0`` returned 9·x, negative pool pads cropped)."""
    ort = pytest.importorskip("onnxruntime")
    m = _conv(dilations=[2, 1], pads=[0, 2, 1, 0], strides=[1, 2])
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    (want,) = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(execute(from_onnx(m), x), want, rtol=1e-5, atol=1e-5)


def test_fuzzers_find_nothing():
    check_isolated(HERE, "fuzz_from_onnx", timeout=120)


# ---- fuzzers (run in the child) ----------------------------------------------------------


def fuzz_from_onnx():
    """Random window attributes on Conv / MaxPool / AveragePool, random axis, permutation and
    coefficient attributes on twelve other ops, and random byte edits of a valid model file:
    ``from_onnx`` raises ValueError or NotImplementedError, or returns a graph whose output
    equals onnxruntime's (where onnxruntime runs the model at all)."""
    import tempfile

    import onnxruntime as ort
    from hypothesis import HealthCheck, given, settings, strategies as st

    from optim.graph import Graph

    fuzz = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))
    x = np.random.default_rng(0).standard_normal((1, 1, 7, 7)).astype(np.float32)
    pair = st.lists(st.integers(-3, 9), min_size=1, max_size=3)
    quad = st.lists(st.integers(-3, 9), min_size=3, max_size=5)

    @fuzz
    @given(op=st.sampled_from(["Conv", "MaxPool", "AveragePool"]), kernel=pair, strides=pair,
           dilations=pair, pads=quad, ceil=st.integers(0, 1), include=st.integers(0, 1),
           group=st.integers(-1, 2))
    def attributes(op, kernel, strides, dilations, pads, ceil, include, group):
        attrs = dict(strides=strides, pads=pads)
        inits = []
        if op == "Conv":
            shape = [2, 1] + [max(k, 0) for k in (kernel + kernel)[:2]]
            inits = [numpy_helper.from_array(np.ones(shape, np.float32), "w")]
            attrs.update(dilations=dilations, group=group, kernel_shape=kernel)
            inputs = ["x", "w"]
        else:
            attrs.update(kernel_shape=kernel, ceil_mode=ceil)
            if op == "AveragePool":
                attrs["count_include_pad"] = include
            inputs = ["x"]
        m = _model([helper.make_node(op, inputs, ["y"], name="n", **attrs)],
                   [_info("x", [1, 1, 7, 7])], [_info("y", None)], inits)
        try:
            graph = from_onnx(m)
        except (ValueError, NotImplementedError):
            return
        (want,) = ort.InferenceSession(m.SerializeToString(),
                                       providers=["CPUExecutionProvider"]).run(None, {"x": x})
        np.testing.assert_allclose(execute(graph, x), want, rtol=1e-5, atol=1e-5)

    attributes()

    x4 = np.random.default_rng(1).standard_normal((2, 3, 4, 5)).astype(np.float32)
    small = st.integers(-5, 6)
    axes = st.lists(small, min_size=1, max_size=3)
    specs = {"Transpose": dict(perm=st.lists(small, min_size=3, max_size=5)),
             "Softmax": dict(axis=small), "LogSoftmax": dict(axis=small), "Flatten": dict(axis=small),
             "Concat": dict(axis=small), "Split": dict(axis=small),
             "LRN": dict(size=small, alpha=st.floats(-1, 1), beta=st.floats(-1, 2)),
             "LeakyRelu": dict(alpha=st.floats(-2, 2)),
             "HardSigmoid": dict(alpha=st.floats(-2, 2), beta=st.floats(-2, 2)),
             "ReduceMean": dict(axes=axes, keepdims=st.integers(0, 1)),
             "Squeeze": dict(axes=axes), "Unsqueeze": dict(axes=axes)}

    @fuzz
    @given(op=st.sampled_from(sorted(specs)), opset=st.sampled_from([11, 17]), data=st.data())
    def other_attributes(op, opset, data):
        attrs = {k: data.draw(v) for k, v in specs[op].items()}
        inputs, inits = (["x", "x"] if op == "Concat" else ["x"]), []
        if opset == 17 and op in ("Squeeze", "Unsqueeze"):
            inits.append(numpy_helper.from_array(np.array(attrs.pop("axes"), np.int64), "a"))
            inputs.append("a")
        outputs = ["y", "z"] if op == "Split" else ["y"]
        m = _model([helper.make_node(op, inputs, outputs, name="n", **attrs)],
                   [_info("x", [2, 3, 4, 5])], [_info(k, None) for k in outputs], inits, opset)
        try:
            graph = from_onnx(m)
        except (ValueError, NotImplementedError):
            return
        got = execute(graph, x4)
        got = got if isinstance(got, tuple) else (got,)
        try:  # onnxruntime refuses some valid attributes (even LRN sizes, alpha <= 0)
            want = ort.InferenceSession(m.SerializeToString(),
                                        providers=["CPUExecutionProvider"]).run(None, {"x": x4})
        except Exception:
            return
        for a, b in zip(got, want):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

    other_attributes()

    w = numpy_helper.from_array(np.linspace(-1, 1, 18, dtype=np.float32).reshape(2, 1, 3, 3), "w")
    shape = numpy_helper.from_array(np.array([0, -1], np.int64), "shape")
    valid = _model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                    helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                    helper.make_node("Reshape", ["p", "shape"], ["y"])],
                   [_info("x", ["N", 1, 7, 7])], [_info("y", None)], [w, shape]).SerializeToString()
    directory = Path(tempfile.mkdtemp())
    edit = st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255))

    @fuzz
    @given(edits=st.lists(edit, min_size=1, max_size=4), cut=st.integers(0, len(valid)))
    def file_bytes(edits, cut):
        data = bytearray(valid)
        for where, value in edits:
            data[where] = value
        path = directory / "fuzzed.onnx"
        path.write_bytes(bytes(data[:cut] if cut < 8 else data))
        try:
            graph = from_onnx(path)
        except (ValueError, NotImplementedError):
            return
        assert isinstance(graph, Graph)

    file_bytes()
