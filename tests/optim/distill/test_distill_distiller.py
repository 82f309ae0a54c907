"""Distiller: the objective it optimises, the frozen teacher, the cache, checkpoint and resume."""
import numpy as np
import pytest

import minnet
from minnet import functional as F
from minnet import nn, optimizers
from optim.distill import (Distiller, attention_transfer_loss, hint_loss, kd_loss,
                           record_features)

from distill_helpers import conv_net, toy_data


def _pair(**kwargs):
    teacher, student = conv_net(4, seed=1), conv_net(2, seed=2)
    return student, teacher, Distiller(student, teacher, **kwargs)


def _params(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


# ---- forward hooks ------------------------------------------------------------------------


def test_record_features_returns_submodule_outputs_and_removes_hooks():
    model = conv_net(2, seed=0)
    x = minnet.Tensor(toy_data(4)[0])
    with record_features(model, ["1", "5"]) as outputs:
        logits = model(x)
    np.testing.assert_array_equal(outputs["1"].data, model[:2](x).data)
    np.testing.assert_array_equal(outputs["5"].data, model[:6](x).data)
    np.testing.assert_array_equal(logits.data, model(x).data)
    assert all(not m._forward_hooks for m in model.modules())


def test_unknown_layer_names_are_rejected():
    student, teacher = conv_net(2, 0), conv_net(4, 1)
    with pytest.raises(ValueError, match="student has no submodule named 'fc9'"):
        Distiller(student, teacher, hints={"fc9": "0"}, input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="teacher has no submodule named 'conv'"):
        Distiller(student, teacher, attention={"1": "conv"})
    with pytest.raises(ValueError, match="input_shape"):
        Distiller(student, teacher, hints={"0": "0"})
    with pytest.raises(TypeError, match="hints"):
        Distiller(student, teacher, hints=["0"], input_shape=(1, 8, 8))


@pytest.mark.parametrize("kwargs, match", [({"T": 0.0}, "T"), ({"alpha": 1.5}, "alpha"),
                                           ({"alpha": -0.5}, "alpha"),
                                           ({"hint_weight": -1.0}, "hint_weight")])
def test_bad_hyperparameters_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _pair(**kwargs)


def test_models_must_be_modules():
    with pytest.raises(TypeError, match="teacher"):
        Distiller(conv_net(2, 0), lambda x: x)


# ---- the objective ------------------------------------------------------------------------


def test_loss_is_the_documented_weighted_sum():
    student, teacher, distiller = _pair(T=3.0, alpha=0.7, hints={"0": "0"}, hint_weight=0.3,
                                        attention={"1": "1"}, attention_weight=50.0,
                                        input_shape=(1, 8, 8))
    x, y = toy_data(8)
    loss, logits, parts = distiller.loss(x, y)
    xt = minnet.Tensor(x)
    with record_features(teacher, ["0", "1"]) as t_out:
        t_logits = teacher(xt)
    with record_features(student, ["0", "1"]) as s_out:
        s_logits = student(xt)
    regressor = distiller.regressors[0]
    assert isinstance(regressor, nn.Conv2d) and regressor.weight.shape == (4, 2, 1, 1)
    kd = float(kd_loss(s_logits, t_logits, 3.0).data)
    ce = float(F.cross_entropy(s_logits, y).data)
    hint = float(hint_loss(regressor(s_out["0"]), t_out["0"], reduction="mean").data)
    at = float(attention_transfer_loss(s_out["1"], t_out["1"]).data)
    np.testing.assert_allclose(logits.data, s_logits.data)
    assert parts == pytest.approx({"kd_loss": kd, "ce_loss": ce, "hint_loss": hint,
                                   "attention_loss": at}, rel=1e-6)
    assert float(loss.data) == pytest.approx(0.7 * kd + 0.3 * ce + 0.3 * hint + 50.0 * at, rel=1e-6)


def test_teacher_is_frozen_and_left_in_its_mode():
    student, teacher, distiller = _pair(hints={"3": "3"}, input_shape=(1, 8, 8))
    teacher.train()
    before = _params(teacher)
    optimizer = optimizers.Adam(distiller.parameters(), lr=1e-2)
    distiller.fit(optimizer, toy_data(32), epochs=2, batch_size=8, progress=False)
    for key, value in teacher.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    assert all(p.grad is None for p in teacher.parameters())
    assert teacher.training
    assert not any(k.startswith("teacher") for k in distiller.state_dict())
    assert {k.split(".")[0] for k in distiller.state_dict()} == {"student", "regressors"}


def test_distillation_brings_student_towards_teacher():
    student, teacher, distiller = _pair(T=2.0, alpha=1.0)
    x, y = toy_data(48)
    optimizer = optimizers.Adam(distiller.parameters(), lr=1e-2)
    history = distiller.fit(optimizer, (x, y), epochs=8, batch_size=16, progress=False)
    assert history["kd_loss"][-1] < 0.5 * history["kd_loss"][0]
    assert np.all(np.isnan(history["ce_loss"]))  # alpha = 1: the labels are not used


@pytest.mark.parametrize("progress", [False, True])
def test_fit_visits_each_epoch_in_the_loaders_documented_order(progress):
    """Epoch k of ``fit(seed=s)`` sees the rows of ``DataLoader(seed=s).order(k)``, with or
    without a progress bar around the loader."""
    x, y = toy_data(40)
    student, teacher, distiller = _pair()
    seen, loss = [], distiller.loss
    distiller.loss = lambda xb, yb, teacher_out: (seen.append(xb.copy()),
                                                  loss(xb, yb, teacher_out))[1]
    distiller.fit(optimizers.SGD(student.parameters(), lr=0.01), (x, y), epochs=2, batch_size=16,
                  seed=5, progress=progress)
    reference = minnet.data.DataLoader(x, batch_size=16, shuffle=True, seed=5)
    order = np.concatenate([reference.order(0), reference.order(1)])
    np.testing.assert_array_equal(np.concatenate(seen), x[order])


def test_cached_teacher_gives_the_same_training():
    x, y = toy_data(40)
    runs = []
    for cache in (False, True):
        student, teacher, distiller = _pair(hints={"0": "0"}, input_shape=(1, 8, 8),
                                            cache_teacher=cache)
        optimizer = optimizers.Adam(distiller.parameters(), lr=1e-2)
        runs.append((distiller.fit(optimizer, (x, y), epochs=2, batch_size=8, seed=3,
                                   progress=False), _params(distiller)))
    (h0, p0), (h1, p1) = runs
    np.testing.assert_allclose(h0["train_loss"], h1["train_loss"], rtol=1e-5)
    for key in p0:
        np.testing.assert_allclose(p0[key], p1[key], rtol=1e-4, atol=1e-6)


def test_resume_continues_exactly(tmp_path):
    x, y = toy_data(40)
    val = toy_data(16, seed=1)

    def run(epochs, path=None, resume=False):
        student, teacher, distiller = _pair(hints={"0": "0"}, input_shape=(1, 8, 8))
        optimizer = optimizers.Adam(distiller.parameters(), lr=1e-2)
        scheduler = optimizers.StepLR(optimizer, step_size=1, gamma=0.5)
        history = distiller.fit(optimizer, (x, y), epochs, batch_size=8, seed=5, val_data=val,
                                scheduler=scheduler, checkpoint_path=path, resume=resume,
                                progress=False)
        return history, _params(distiller)

    full_history, full = run(3)
    path = tmp_path / "distill.npz"
    run(1, path)
    history, resumed = run(3, path, resume=True)
    for key in full:
        np.testing.assert_array_equal(resumed[key], full[key])
    assert history["val_accuracy"] == full_history["val_accuracy"]
    assert history["lr"] == [1e-2, 5e-3, 2.5e-3]


def test_fit_rejects_bad_arguments(tmp_path):
    _, _, distiller = _pair()
    optimizer = optimizers.Adam(distiller.parameters())
    with pytest.raises(ValueError, match="epochs"):
        distiller.fit(optimizer, toy_data(8), epochs=0)
    with pytest.raises(ValueError, match="checkpoint_path"):
        distiller.fit(optimizer, toy_data(8), epochs=1, resume=True)
    with pytest.raises(ValueError, match="train_data"):
        distiller.fit(optimizer, (np.zeros((3, 1, 8, 8)), np.zeros(2, np.int64)), epochs=1)
