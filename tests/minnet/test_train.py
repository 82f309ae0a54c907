"""fit/evaluate: learning happens, history is complete, and resume is bitwise exact."""
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import minnet
from minnet import models, nn, optimizers
from minnet.train import evaluate, fit


def _blobs(n=256, seed=0):
    """Two Gaussian blobs in 2-D: linearly separable."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = (rng.standard_normal((n, 2)) + 3 * (2 * y[:, None] - 1)).astype(np.float32)
    return x, y.astype(np.int64)


def test_fit_learns_separable_data_and_records_history():
    minnet.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    data = _blobs()
    history = fit(model, optimizers.Adam(model.parameters(), lr=1e-2), data, 5, batch_size=32,
                  val_data=data, progress=False)
    assert all(len(v) == 5 for v in history.values())
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert evaluate(model, data)["accuracy"] > 0.95


def test_fit_rejects_bad_arguments():
    model = nn.Linear(2, 2)
    opt = optimizers.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="epochs"):
        fit(model, opt, _blobs(), 0)
    with pytest.raises(ValueError, match="equal length"):
        fit(model, opt, (np.zeros((3, 2), np.float32), np.zeros(2, np.int64)), 1)
    with pytest.raises(ValueError, match="checkpoint_path"):
        fit(model, opt, _blobs(), 1, resume=True)


def test_resume_from_checkpoint_equals_uninterrupted(tmp_path):
    def run(epochs, resume):
        minnet.manual_seed(1)
        model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 2))
        opt = optimizers.SGD(model.parameters(), lr=0.05, momentum=0.9)
        sched = optimizers.StepLR(opt, step_size=1, gamma=0.5)
        fit(model, opt, _blobs(), epochs, batch_size=16, scheduler=sched, seed=3,
            checkpoint_path=tmp_path / "ck.npz", resume=resume, progress=False)
        return model.state_dict()

    full = run(3, resume=False)
    os.remove(tmp_path / "ck.npz")
    run(1, resume=False)
    resumed = run(3, resume=True)
    assert all(np.array_equal(full[k], resumed[k]) for k in full)


_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, minnet
    from minnet import models, optimizers
    from minnet.data import load_mnist
    from minnet.train import fit

    path, epochs = sys.argv[1], int(sys.argv[2])
    x, y = load_mnist("train")
    x, y = x[:256], y[:256]
    minnet.manual_seed(0)
    model = models.lenet5()
    opt = optimizers.Adam(model.parameters(), lr=1e-3)
    sched = optimizers.CosineAnnealingLR(opt, T_max=epochs)
    original_save = minnet.train.save
    def save_and_announce(state, p):
        original_save(state, p)
        print("saved", int(state["epoch"]), flush=True)
        if len(sys.argv) > 3:  # wait to be killed by the test right after the first checkpoint
            import time
            time.sleep(60)
    minnet.train.save = save_and_announce
    fit(model, opt, (x, y), epochs, batch_size=64, scheduler=sched, seed=0,
        checkpoint_path=path, resume=True, progress=False)
    np.savez(path + ".final.npz", **model.state_dict())
""")


def test_resume_after_sigkill_is_bitwise_identical(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    killed, clean = str(tmp_path / "killed.npz"), str(tmp_path / "clean.npz")
    proc = subprocess.Popen([sys.executable, str(script), killed, "3", "sleep"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().split() == ["saved", "1"]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run([sys.executable, str(script), killed, "3"], check=True, capture_output=True)
    subprocess.run([sys.executable, str(script), clean, "3"], check=True, capture_output=True)
    a, b = np.load(killed + ".final.npz"), np.load(clean + ".final.npz")
    assert sorted(a.files) == sorted(b.files)
    assert all(np.array_equal(a[k], b[k]) for k in a.files)


@pytest.mark.parametrize("progress", [False, True])
def test_fit_visits_each_epoch_in_the_loaders_documented_order(progress):
    """Epoch k of ``fit(seed=s)`` visits the rows in ``DataLoader(seed=s).order(k)``, whether
    or not a progress bar wraps the loader (a bar that calls ``iter()`` on construction must
    not advance the loader's epoch)."""
    x, y = _blobs(n=100)
    seen = []

    def recording_loss(logits, yb):
        seen.append(yb.copy())
        return minnet.functional.cross_entropy(logits, yb % 2)

    model = nn.Linear(2, 2)
    fit(model, optimizers.SGD(model.parameters(), lr=0.1), (x, np.arange(100)), 3,
        batch_size=32, seed=7, loss_fn=recording_loss, progress=progress)
    reference = minnet.data.DataLoader(x, batch_size=32, shuffle=True, seed=7)
    expected = np.concatenate([reference.order(epoch) for epoch in range(3)])
    np.testing.assert_array_equal(np.concatenate(seen), expected)
