"""The training loop's resume state: when ``state.pt`` is written, and that resuming from any saved
epoch ends where an uninterrupted stage ends."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from smir_lib.engine import train_loop
from smir_lib.engine.config import load_config
from smir_lib.engine.distributed import init_distributed
from smir_lib.files import atomic_save

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]

EPOCHS = 6


def run_stage(stage_dir, monkeypatch, every_s: float, saved: list | None = None):
    monkeypatch.setattr(train_loop, "STATE_EVERY_S", every_s)
    monkeypatch.setattr(train_loop, "STATE_COST_FACTOR", 0.0 if every_s == 0 else 20.0)
    if saved is not None:
        def recording(obj, path):
            if path.name == "state.pt":
                saved.append(obj["epoch"])
            return atomic_save(obj, path)

        monkeypatch.setattr(train_loop, "atomic_save", recording)
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    data = TensorDataset(torch.randn(8, 3), torch.randn(8, 1))
    cfg = load_config("fast", {"workers": 0, "warmup_epochs": 1, "seed": 0, "progress": False})

    def batch_loss(net, batch, generator):
        x, y = batch
        return ((net(x) - y) ** 2).mean(), len(x)

    def validate(net):
        with torch.no_grad():
            return {"val_loss": float(((net(data.tensors[0]) - data.tensors[1]) ** 2).mean())}

    result = train_loop.train_stage(model, data, batch_loss, validate, cfg=cfg, ctx=init_distributed("cpu"),
                                    stage_dir=stage_dir, stage="t", epochs=EPOCHS, batch_size=4)
    return model.state_dict(), result


def test_state_is_written_after_the_first_and_last_epochs_and_then_by_time(tmp_path, monkeypatch):
    saved = []
    run_stage(tmp_path / "slow", monkeypatch, every_s=1e9, saved=saved)
    assert saved == [0, EPOCHS - 1]  # a stage shorter than the interval: first and last only
    saved.clear()
    run_stage(tmp_path / "every", monkeypatch, every_s=0.0, saved=saved)
    assert saved == list(range(EPOCHS))


def test_a_stage_resumed_from_a_mid_stage_state_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    import shutil

    whole, result = run_stage(tmp_path / "whole", monkeypatch, every_s=1e9)
    kept = tmp_path / "killed" / "state.pt"
    kept.parent.mkdir()
    def keep_epoch_2(obj, path):  # the state a run killed during epoch 3 or 4 would have left
        atomic_save(obj, path)
        if path.name == "state.pt" and obj["epoch"] == 2:
            shutil.copy(path, kept)

    monkeypatch.setattr(train_loop, "atomic_save", keep_epoch_2)
    run_stage(tmp_path / "copy", monkeypatch, every_s=0.0)
    monkeypatch.setattr(train_loop, "atomic_save", atomic_save)
    resumed, again = run_stage(tmp_path / "killed", monkeypatch, every_s=1e9)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in h]  # noqa: E731
    assert strip(again.history) == strip(result.history) and len(again.history) == EPOCHS
