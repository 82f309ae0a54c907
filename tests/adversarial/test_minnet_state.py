"""Adversarial catalogue for minnet's state: loading is all or nothing, resume checks the run,
training never goes silently non-finite.

Issue 15, classes 3 (half-applied state, RNG state looked up by name), 5 (silent NaN in
``fit``) and 7 (resume with other settings). Each parametrised case is a bad input and the
exact exception it must raise; every case also checks that the state it was loaded into is
unchanged, array by array.
"""
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minnet
from minnet import functional as F
from minnet import io as mio
from minnet import nn, optimizers
from minnet import random as mrandom
from minnet.train import (CheckpointError, NonFiniteError, ResumeMismatchError,
                          checkpoint_state, fit, load_checkpoint)

HISTORY_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")


def snapshot(*objects) -> list[dict]:
    return [{k: np.array(v, copy=True) for k, v in obj.state_dict().items()} for obj in objects]


def assert_same(before: list[dict], after: list[dict]):
    for old, new in zip(before, after):
        assert set(old) == set(new)
        for key in old:
            assert old[key].dtype == new[key].dtype and old[key].shape == new[key].shape, key
            np.testing.assert_array_equal(old[key], new[key], err_msg=key)


def mlp(seed=0, hidden=4):
    minnet.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, 2))


def blobs(n=64, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = (rng.standard_normal((n, 3)) + 2 * (2 * y[:, None] - 1)).astype(np.float32)
    return x, y.astype(np.int64)


# ---- Module.load_state_dict: every failure, even on the last key, changes nothing ---------
def _other_state():
    return dict(mlp(seed=1).state_dict())


MODULE_CASES = {
    "last key of the wrong shape": lambda s: {**s, "3.bias": np.zeros(3, np.float32)},
    "last key holding strings": lambda s: {**s, "3.bias": np.array(["a", "b"])},
    "last key complex": lambda s: {**s, "3.bias": np.ones(2, np.complex64)},
    "last key an object array": lambda s: {**s, "3.bias": np.array([None, 1], dtype=object)},
    "last key ragged": lambda s: {**s, "3.bias": [[1.0, 2.0], [3.0]]},
    "last key None": lambda s: {**s, "3.bias": None},
    "float into an integer buffer": lambda s: {**s, "1.num_batches_tracked": np.array(2.5)},
    "last key missing": lambda s: {k: v for k, v in s.items() if k != "3.bias"},
    "unexpected extra key": lambda s: {**s, "4.weight": np.ones(2, np.float32)},
}


@pytest.mark.parametrize("case", sorted(MODULE_CASES))
def test_module_load_state_dict_is_all_or_nothing(case):
    model = mlp()
    before = snapshot(model)
    with pytest.raises(ValueError, match="load_state_dict"):
        model.load_state_dict(MODULE_CASES[case](_other_state()))
    assert_same(before, snapshot(model))


def test_module_load_state_dict_casts_same_kind_and_loads_everything():
    model, state = mlp(), _other_state()
    state = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in state.items()}
    model.load_state_dict(state)
    for key, value in model.state_dict().items():
        assert value.dtype == (np.float32 if key != "1.num_batches_tracked" else np.int64)
        np.testing.assert_array_equal(value, state[key].astype(value.dtype))


# ---- optimizer load_state_dict ----------------------------------------------------------
def _stepped(optimizer_class, steps, **options):
    model = mlp()
    optimizer = optimizer_class(model.parameters(), **options)
    x, y = blobs(16)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(minnet.Tensor(x)), y).backward()
        optimizer.step()
    return model, optimizer


LAST = 5  # index of the last parameter (3.bias) in the optimizer's numbering

ADAM_CASES = {
    "state without exp_avg": (lambda s: s.pop(f"state.{LAST}.exp_avg"), ValueError),
    "state without exp_avg_sq": (lambda s: s.pop(f"state.{LAST}.exp_avg_sq"), ValueError),
    "state without step": (lambda s: s.pop(f"state.{LAST}.step"), ValueError),
    "negative step": (lambda s: s.update({f"state.{LAST}.step": np.array(-1)}), ValueError),
    "fractional step": (lambda s: s.update({f"state.{LAST}.step": np.array(1.5)}), ValueError),
    "step of shape (2,)": (lambda s: s.update({f"state.{LAST}.step": np.array([1, 2])}),
                           ValueError),
    "exp_avg of the wrong shape": (
        lambda s: s.update({f"state.{LAST}.exp_avg": np.zeros(3, np.float32)}), ValueError),
    "exp_avg of integers": (
        lambda s: s.update({f"state.{LAST}.exp_avg": np.zeros(2, np.int64)}), ValueError),
    "exp_avg of strings": (
        lambda s: s.update({f"state.{LAST}.exp_avg": np.array(["a", "b"])}), ValueError),
    "unknown state name": (
        lambda s: s.update({f"state.{LAST}.momentum_buffer": np.zeros(2, np.float32)}),
        ValueError),
    "state for a parameter that does not exist": (
        lambda s: s.update({"state.99.step": np.array(1)}), ValueError),
    "unknown option": (lambda s: s.update({"param_groups.0.foo": np.array(1.0)}), ValueError),
    "lr as a string": (lambda s: s.update({"param_groups.0.lr": np.array("fast")}), ValueError),
    "negative lr": (lambda s: s.update({"param_groups.0.lr": np.array(-1.0)}), ValueError),
    "NaN lr": (lambda s: s.update({"param_groups.0.lr": np.array(np.nan)}), ValueError),
    "three betas": (lambda s: s.update({"param_groups.0.betas": np.array([0.9, 0.9, 0.9])}),
                    ValueError),
    "amsgrad as a float": (lambda s: s.update({"param_groups.0.amsgrad": np.array(0.5)}),
                           TypeError),
    "parameter indices permuted": (
        lambda s: s.update({"param_groups.0.params": np.arange(LAST + 1)[::-1].copy()}),
        ValueError),
    "second parameter group": (lambda s: s.update({"param_groups.1.params": np.arange(1)}),
                               ValueError),
    "malformed key": (lambda s: s.update({"state.x.exp_avg": np.zeros(1)}), ValueError),
}


@pytest.mark.parametrize("case", sorted(ADAM_CASES))
@pytest.mark.parametrize("optimizer_class", [optimizers.Adam, optimizers.AdamW])
def test_optimizer_load_state_dict_is_all_or_nothing(optimizer_class, case):
    edit, error = ADAM_CASES[case]
    _, donor = _stepped(optimizer_class, 3, lr=1e-2)
    state = donor.state_dict()
    edit(state)
    model, optimizer = _stepped(optimizer_class, 1, lr=1e-3)
    before = snapshot(optimizer)
    with pytest.raises(error):
        optimizer.load_state_dict(state)
    assert_same(before, snapshot(optimizer))
    optimizer.step()  # still usable


SGD_CASES = {
    "momentum buffer of the wrong shape": lambda s: s.update(
        {f"state.{LAST}.momentum_buffer": np.zeros((2, 1), np.float32)}),
    "momentum buffer of booleans": lambda s: s.update(
        {f"state.{LAST}.momentum_buffer": np.zeros(2, bool)}),
    "Adam's state in an SGD state dict": lambda s: s.update({f"state.{LAST}.step": np.array(1)}),
    "nesterov without momentum": lambda s: s.update({"param_groups.0.momentum": np.array(0.0)}),
}


@pytest.mark.parametrize("case", sorted(SGD_CASES))
def test_sgd_load_state_dict_is_all_or_nothing(case):
    _, donor = _stepped(optimizers.SGD, 2, lr=0.1, momentum=0.9, nesterov=True)
    state = donor.state_dict()
    SGD_CASES[case](state)
    _, optimizer = _stepped(optimizers.SGD, 1, lr=0.05, momentum=0.5, nesterov=True)
    before = snapshot(optimizer)
    with pytest.raises(ValueError):
        optimizer.load_state_dict(state)
    assert_same(before, snapshot(optimizer))


def test_optimizer_accepts_its_own_state_dict_and_resumes_bitwise():
    model_a, a = _stepped(optimizers.Adam, 3, lr=1e-2)
    model_b, b = _stepped(optimizers.Adam, 1, lr=1e-3)
    model_b.load_state_dict(model_a.state_dict())
    b.load_state_dict(a.state_dict())
    x, y = blobs(16, seed=5)
    for model, optimizer in ((model_a, a), (model_b, b)):
        optimizer.zero_grad()
        F.cross_entropy(model(minnet.Tensor(x)), y).backward()
        optimizer.step()
    assert_same(snapshot(model_a, a), snapshot(model_b, b))


SCHEDULER_CASES = {
    "negative last_epoch": {"last_epoch": np.array(-1)},
    "fractional last_epoch": {"last_epoch": np.array(1.5)},
    "two base rates for one group": {"base_lrs": np.array([0.1, 0.2])},
    "rates as strings": {"last_lr": np.array(["0.1"])},
}


@pytest.mark.parametrize("case", sorted(SCHEDULER_CASES))
def test_scheduler_load_state_dict_is_all_or_nothing(case):
    _, optimizer = _stepped(optimizers.SGD, 1, lr=0.1)
    scheduler = optimizers.StepLR(optimizer, step_size=1, gamma=0.5)
    scheduler.step()
    state = {**scheduler.state_dict(), **SCHEDULER_CASES[case]}
    _, other = _stepped(optimizers.SGD, 1, lr=0.1)
    target = optimizers.StepLR(other, step_size=1, gamma=0.5)
    before = snapshot(target)
    with pytest.raises(ValueError):
        target.load_state_dict(state)
    assert_same(before, snapshot(target))


# ---- RNG state: a whitelist, never a name from the file ----------------------------------
def _json(obj) -> np.ndarray:
    return np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8).copy()


def _pcg(**changes):
    state = np.random.default_rng(5).bit_generator.state
    state.update(changes)
    return state


RNG_CASES = {
    "MT19937 (a real NumPy generator, not whitelisted)":
        _json(np.random.MT19937(1).state | {"state": {"key": [0], "pos": 0}}),
    "a name that is a NumPy function": _json(_pcg(bit_generator="seed")),
    "a dunder name": _json(_pcg(bit_generator="__class__")),
    "not UTF-8": np.frombuffer(b"\xff\xfe\xfd", dtype=np.uint8).copy(),
    "not JSON": _json("x")[1:-1],
    "a JSON list": _json([1, 2]),
    "a missing key": _json({k: v for k, v in _pcg().items() if k != "uinteger"}),
    "an extra key": _json(_pcg(extra=1)),
    "negative state": _json(_pcg(state={"state": -1, "inc": 3})),
    "inc of 129 bits": _json(_pcg(state={"state": 1, "inc": 2 ** 128})),
    "fractional state": _json(_pcg(state={"state": 1.5, "inc": 3})),
    "boolean state": _json(_pcg(state={"state": True, "inc": 3})),
    "has_uint32 = 2": _json(_pcg(has_uint32=2)),
    "negative uinteger": _json(_pcg(uinteger=-1)),
    "int16 array": _json(_pcg()).astype(np.int16),
    "2-D array": _json(_pcg()).reshape(1, -1),
    "2 KiB long": np.full(2048, ord(" "), dtype=np.uint8),
    "deeply nested JSON": np.frombuffer(b"[" * 100000, dtype=np.uint8).copy(),
}


@pytest.mark.parametrize("case", sorted(RNG_CASES))
def test_bad_rng_state_is_refused(case):
    minnet.manual_seed(11)
    expected = np.random.default_rng(11).random(4)
    with pytest.raises(ValueError, match="rng state"):
        mrandom.set_rng_state(RNG_CASES[case])
    np.testing.assert_array_equal(mrandom.get_rng().random(4), expected)  # unchanged


def test_rng_state_round_trips():
    minnet.manual_seed(3)
    state = mrandom.get_rng_state()
    first = mrandom.get_rng().random(5)
    mrandom.set_rng_state(state)
    np.testing.assert_array_equal(mrandom.get_rng().random(5), first)


# ---- fit(resume=True) from a bad checkpoint restores nothing -------------------------------
def _run(path, epochs=1, *, model=None, optimizer=None, scheduler=None, **kwargs):
    model = model if model is not None else mlp()
    optimizer = optimizer if optimizer is not None else optimizers.Adam(model.parameters(),
                                                                        lr=1e-2)
    if scheduler is None:
        scheduler = optimizers.StepLR(optimizer, step_size=1, gamma=0.5)
    options = dict(batch_size=16, seed=3, progress=False)
    options.update(kwargs)
    history = fit(model, optimizer, options.pop("data", blobs()), epochs, scheduler=scheduler,
                  checkpoint_path=path, resume=True, **options)
    return model, optimizer, scheduler, history


def _edit_checkpoint(path, edit):
    state = mio.load(path)
    edit(state)
    mio.save(state, path)


CHECKPOINT_CASES = {
    "no epoch": (lambda s: s.pop("epoch"), CheckpointError),
    "negative epoch": (lambda s: s.update(epoch=np.array(-1)), CheckpointError),
    "epoch as a float": (lambda s: s.update(epoch=np.array(1.0)), CheckpointError),
    "no rng_state": (lambda s: s.pop("rng_state"), CheckpointError),
    "corrupt rng_state": (lambda s: s["rng_state"].__setitem__(slice(0, 5), 0xFF),
                          CheckpointError),
    "rng_state naming another generator": (
        lambda s: s.update(rng_state=RNG_CASES["a name that is a NumPy function"]),
        CheckpointError),
    "optimizer state without exp_avg": (lambda s: s.pop(f"optimizer.state.{LAST}.exp_avg"),
                                        CheckpointError),
    "model key of the wrong shape": (lambda s: s.update({"model.3.bias": np.zeros(5)}),
                                     CheckpointError),
    "model key missing": (lambda s: s.pop("model.3.weight"), CheckpointError),
    "scheduler with a negative epoch": (lambda s: s.update({"scheduler.last_epoch":
                                                            np.array(-3)}), CheckpointError),
    "history one entry short": (lambda s: s.update({"history.lr": np.zeros(0)}),
                                CheckpointError),
    "history key missing": (lambda s: s.pop("history.seconds"), CheckpointError),
    "unexpected key": (lambda s: s.update(payload=np.zeros(1)), CheckpointError),
    "fingerprint not JSON": (lambda s: s.update(fingerprint=np.zeros(4, np.uint8)),
                             CheckpointError),
}


def _fresh(tmp_path):
    model = mlp(seed=9)
    optimizer = optimizers.Adam(model.parameters(), lr=1e-2)
    scheduler = optimizers.StepLR(optimizer, step_size=1, gamma=0.5)
    return model, optimizer, scheduler


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_bad_checkpoint_restores_nothing(tmp_path, case):
    path = tmp_path / "ck.npz"
    _run(path)
    edit, error = CHECKPOINT_CASES[case]
    _edit_checkpoint(path, edit)
    model, optimizer, scheduler = _fresh(tmp_path)
    before = snapshot(model, optimizer, scheduler)
    with pytest.raises(error):
        _run(path, 2, model=model, optimizer=optimizer, scheduler=scheduler)
    assert_same(before, snapshot(model, optimizer, scheduler))


_DAMAGES = {
    "delete": lambda v: None,
    "grow": lambda v: np.append(v.reshape(-1), v.reshape(-1)[:1]) if v.size else np.zeros(1),
    "scalar": lambda v: np.asarray(v.reshape(-1)[0] if v.size else 0),
    "int8": lambda v: v.astype(np.int8),
    "float16": lambda v: v.astype(np.float16),
    "complex": lambda v: v.astype(np.complex64),
    "bytes": lambda v: v.astype("S4"),
    "bool": lambda v: v.astype(bool),
}
_VALID_CHECKPOINT = {}


def _valid_checkpoint() -> dict:
    """One checkpoint of ``_run`` (1 epoch), made once."""
    if not _VALID_CHECKPOINT:
        path = Path(tempfile.mkdtemp()) / "ck.npz"
        _run(path)
        _VALID_CHECKPOINT.update(mio.load(path))
    return _VALID_CHECKPOINT


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
@given(data=st.data())
def test_randomly_damaged_checkpoint_restores_all_or_nothing(tmp_path_factory, data):
    """Random damage to one to three random entries: ``load_checkpoint`` either restores the
    checkpoint (the model then holds the saved arrays cast to its dtypes) or raises a
    ValueError and leaves model, optimizer and scheduler unchanged."""
    valid = _valid_checkpoint()
    state = dict(valid)
    keys = data.draw(st.lists(st.sampled_from(sorted(state)), min_size=1, max_size=3,
                              unique=True), label="keys")
    for key in keys:
        value = _DAMAGES[data.draw(st.sampled_from(sorted(_DAMAGES)), label=key)](state[key])
        if value is None:
            del state[key]
        else:
            state[key] = value
    path = tmp_path_factory.mktemp("damaged") / "ck.npz"
    mio.save(state, path)
    model, optimizer, scheduler = _fresh(path)
    before = snapshot(model, optimizer, scheduler)
    fingerprint = json.loads(valid["fingerprint"].tobytes())
    try:
        epoch, history = load_checkpoint(path, model, optimizer, scheduler,
                                         history_keys=HISTORY_KEYS, fingerprint=fingerprint)
    except ValueError:
        assert_same(before, snapshot(model, optimizer, scheduler))
        return
    assert epoch == 1 and set(history) == set(HISTORY_KEYS)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, np.asarray(state[f"model.{key}"]).astype(value.dtype))


def test_unreadable_checkpoint_restores_nothing(tmp_path):
    path = tmp_path / "ck.npz"
    path.write_text("epoch = 3\n")
    model, optimizer, scheduler = _fresh(tmp_path)
    before = snapshot(model, optimizer, scheduler)
    with pytest.raises(mio.UnreadableFileError):
        _run(path, 2, model=model, optimizer=optimizer, scheduler=scheduler)
    assert_same(before, snapshot(model, optimizer, scheduler))


# ---- resume with other settings ----------------------------------------------------------
def _other_labels():
    x, y = blobs()
    y = y.copy()
    y[5] = 1 - y[5]
    return x, y


def _sgd_run(path, epochs, **kwargs):
    model = mlp()
    return _run(path, epochs, model=model, optimizer=optimizers.SGD(model.parameters(), lr=0.1),
                **kwargs)


def _other_schedule(path, epochs, **kwargs):
    model = mlp()
    optimizer = optimizers.Adam(model.parameters(), lr=1e-2)
    return _run(path, epochs, model=model, optimizer=optimizer,
                scheduler=optimizers.StepLR(optimizer, step_size=2, gamma=0.5), **kwargs)


def _other_lr(path, epochs, **kwargs):
    model = mlp()
    return _run(path, epochs, model=model, optimizer=optimizers.Adam(model.parameters(), lr=2e-2),
                **kwargs)


def _custom_loss(logits, target, reduction="mean"):
    return F.cross_entropy(logits, target, reduction=reduction)


# case -> resume for 2 epochs from a 1-epoch checkpoint with one setting changed (keyword
# arguments go to fit)
MISMATCH_CASES = {
    "seed": lambda p, **kw: _run(p, 2, seed=4, **kw),
    "batch_size": lambda p, **kw: _run(p, 2, batch_size=8, **kw),
    "train_data": lambda p, **kw: _run(p, 2, data=_other_labels(), **kw),
    "val_data": lambda p, **kw: _run(p, 2, val_data=blobs(8), **kw),
    "loss_fn": lambda p, **kw: _run(p, 2, loss_fn=_custom_loss, **kw),
    "optimizer": lambda p, **kw: _sgd_run(p, 2, **kw),
    "optimizer lr": lambda p, **kw: _other_lr(p, 2, **kw),
    "scheduler": lambda p, **kw: _other_schedule(p, 2, **kw),
    "model": lambda p, **kw: _run(p, 2, model=mlp(hidden=5), **kw),
}


@pytest.mark.parametrize("case", sorted(MISMATCH_CASES))
def test_resume_with_other_settings_is_refused(tmp_path, case):
    path = tmp_path / "ck.npz"
    _run(path)
    written = path.read_bytes()
    field = case.split()[0]
    with pytest.raises(ResumeMismatchError, match=rf"{field}: checkpoint") as info:
        MISMATCH_CASES[case](path)
    assert list(info.value.differences) == [field]
    assert path.read_bytes() == written  # nothing trained, nothing written
    if case in ("model", "optimizer"):  # another layout or type cannot load the state at all
        with pytest.raises(CheckpointError, match=f"the {field} section cannot be restored"):
            MISMATCH_CASES[case](path, allow_changes=[field])
    else:  # the explicit override resumes: one more epoch, two in the history
        *_, history = MISMATCH_CASES[case](path, allow_changes=[field])
        assert len(history["lr"]) == 2


def test_resume_cannot_cut_a_run_below_the_epochs_it_completed(tmp_path):
    path = tmp_path / "ck.npz"
    _run(path, 3)
    with pytest.raises(ResumeMismatchError, match=r"epochs: checkpoint 3, this run 2.*completed 3"):
        _run(path, 2)
    *_, history = _run(path, 2, allow_changes=["epochs"])
    assert len(history["lr"]) == 3  # the checkpoint's run, as the override asked


def test_resume_with_the_same_settings_equals_an_uninterrupted_run(tmp_path):
    model, *_ = _run(tmp_path / "once.npz", 3)
    _run(tmp_path / "twice.npz", 1)
    _run(tmp_path / "twice.npz", 2)
    resumed, *_ = _run(tmp_path / "twice.npz", 3)
    assert_same(snapshot(model), snapshot(resumed))


def test_checkpoint_without_fingerprint_needs_an_explicit_override(tmp_path):
    path = tmp_path / "ck.npz"
    _run(path)
    _edit_checkpoint(path, lambda s: s.pop("fingerprint"))
    with pytest.raises(ResumeMismatchError, match="no run fingerprint"):
        _run(path, 2)
    *_, history = _run(path, 2, allow_changes=True)
    assert len(history["lr"]) == 2


@pytest.mark.parametrize("allow, error", [("seed", TypeError), (["seeds"], ValueError),
                                          (1, TypeError)])
def test_allow_changes_is_checked(tmp_path, allow, error):
    with pytest.raises(error, match="allow_changes"):
        _run(tmp_path / "ck.npz", allow_changes=allow)


# ---- silent NaN --------------------------------------------------------------------------
def _nan_data(index=21, value=np.nan):
    x, y = blobs()
    x = x.copy()
    x[index, 1] = value
    return x, y


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_one_nonfinite_pixel_stops_training_before_any_step(tmp_path, value):
    """One batch per epoch (batch_size = n): the first step meets the bad pixel."""
    path = tmp_path / "ck.npz"
    model = mlp()
    before = snapshot(model)
    with pytest.raises(NonFiniteError, match=r"loss nan in epoch 1/2, batch 0 .*step 1;"):
        _run(path, 2, model=model, data=_nan_data(value=value), batch_size=64)
    assert_same(before, snapshot(model))  # no step, and the running statistics restored
    assert not path.exists()


class LossTurningNaN:
    """Cross entropy, except that call number ``bad`` (1-based) returns NaN."""

    def __init__(self, bad):
        self.bad, self.calls = bad, 0

    def __call__(self, logits, target, reduction="mean"):
        self.calls += 1
        loss = F.cross_entropy(logits, target, reduction=reduction)
        return loss * np.float32(np.nan) if self.calls == self.bad else loss


@pytest.mark.parametrize("bad, epoch, batch", [(1, 1, 0), (4, 1, 3), (6, 2, 1), (12, 3, 3)])
def test_nonfinite_loss_error_names_epoch_batch_and_step(tmp_path, bad, epoch, batch):
    """64 samples in batches of 16: 4 steps per epoch, so the loss of step s is computed in
    epoch ceil(s / 4), batch (s - 1) mod 4; a checkpoint exists for the finished epochs only."""
    path = tmp_path / "ck.npz"
    with pytest.raises(NonFiniteError,
                       match=rf"loss nan in epoch {epoch}/3, batch {batch} .*step {bad};"):
        _run(path, 3, loss_fn=LossTurningNaN(bad))
    if epoch == 1:
        assert not path.exists()
    else:
        assert int(mio.load(path)["epoch"]) == epoch - 1


def test_nonfinite_gradient_stops_training(tmp_path):
    def sqrt_loss(logits, target, reduction="mean"):  # finite (0), gradient +inf at 0
        return ((logits - logits.detach()) ** 0.5).sum() + F.cross_entropy(logits, target)

    model = mlp()
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 0 ** -0.5 in the backward pass
        with pytest.raises(NonFiniteError, match=r"gradient of '\d\.\w+' in epoch 1/1, batch 0"):
            _run(tmp_path / "ck.npz", model=model, loss_fn=sqrt_loss)
    assert_same(before, snapshot(model))  # the optimizer never stepped


def test_skip_leaves_out_the_nonfinite_batch_each_epoch(tmp_path):
    path = tmp_path / "ck.npz"
    with pytest.warns(RuntimeWarning, match="skipped 1 of 4 batches") as record:
        model, *_ = _run(path, 2, data=_nan_data(), on_nonfinite="skip")
    assert len([w for w in record if "skipped" in str(w.message)]) == 2
    assert all(np.isfinite(v).all() for v in model.state_dict().values())
    assert all(np.isfinite(v).all() for k, v in mio.load(path).items()
               if not k.startswith("history."))


def test_parameters_that_overflow_are_never_checkpointed(tmp_path):
    path = tmp_path / "ck.npz"
    model = mlp()
    # lr * gradient overflows float32: the parameters become infinite after the first step,
    # every later loss is skipped, and the end-of-epoch checkpoint is refused
    with pytest.warns(RuntimeWarning), pytest.raises(NonFiniteError, match="not written"):
        _run(path, 2, model=model, optimizer=optimizers.SGD(model.parameters(), lr=1e39),
             on_nonfinite="skip")
    assert not path.exists()


def test_checkpoint_state_refuses_nonfinite_parameters():
    model = mlp()
    optimizer = optimizers.SGD(model.parameters(), lr=0.1)
    model[0].weight.data[1, 2] = np.nan
    with pytest.raises(NonFiniteError, match="model.0.weight"):
        checkpoint_state(model, optimizer, None, 1, {})


def test_on_nonfinite_is_checked(tmp_path):
    with pytest.raises(ValueError, match="on_nonfinite"):
        _run(tmp_path / "ck.npz", on_nonfinite="ignore")
