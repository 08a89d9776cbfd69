"""The trainer's TrainState: its checkpoint share goes through checkpoint.py and comes back whole."""

from __future__ import annotations

import math

import torch

from fer_core.train.checkpoint import CHECKPOINT_KEYS, load_checkpoint, save_checkpoint
from fer_core.train.optim import LRSchedule, create_optimizer
from fer_core.train.trainer import TrainState


def fresh_state() -> TrainState:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    optimizer = create_optimizer(model, name="adam", lr=1e-2)
    schedule = LRSchedule(
        optimizer,
        name="plateau",
        epochs=5,
        steps_per_epoch=2,
        warmup_epochs=1,
        plateau_patience=0,
        plateau_monitor="val_loss",
    )
    return TrainState(model, optimizer, schedule)


def test_a_new_state_starts_at_epoch_zero_with_nothing_kept():
    state = fresh_state()
    assert (state.epoch, state.history, state.best_val_acc, state.best_epoch) == (0, [], -math.inf, 0)
    assert (state.es_best, state.es_wait, state.es_state) == (None, 0, None)


def test_state_round_trips_through_the_checkpoint(tmp_path):
    state = fresh_state()
    for _ in range(3):  # optimizer moments, schedule counters, BN stats
        loss = state.model(torch.randn(8, 3)).pow(2).mean()
        state.optimizer.zero_grad()
        loss.backward()
        state.optimizer.step()
        state.schedule.step_batch()
    state.schedule.step_epoch({"val_loss": 1.0})
    state.epoch, state.history = 2, [{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.25}]
    state.best_val_acc, state.best_epoch = 0.5, 1
    state.es_best, state.es_wait = -0.7, 1
    state.es_state = {k: v.detach().clone() for k, v in state.model.state_dict().items()}

    assert set(state.state_dict()) <= set(CHECKPOINT_KEYS)  # checkpoint.py owns the payload's keys
    save_checkpoint(tmp_path, config={}, data_version="v1", classes=["a", "b"], **state.state_dict())
    back = fresh_state()
    back.load_state_dict(load_checkpoint(tmp_path))

    assert (back.epoch, back.history, back.best_val_acc, back.best_epoch) == (2, state.history, 0.5, 1)
    assert (back.es_best, back.es_wait) == (-0.7, 1)
    assert back.es_state.keys() == state.es_state.keys()
    assert all(torch.equal(back.es_state[k], v) for k, v in state.es_state.items())
    assert all(torch.equal(back.model.state_dict()[k], v) for k, v in state.model.state_dict().items())
    assert back.schedule.state_dict() == state.schedule.state_dict() and back.schedule.lr == state.schedule.lr
    # the restored optimizer continues exactly as the original does
    x = torch.randn(8, 3)
    for s in (state, back):
        s.model.train()
        s.optimizer.zero_grad()
        s.model(x).pow(2).mean().backward()
        s.optimizer.step()
    assert all(torch.equal(back.model.state_dict()[k], v) for k, v in state.model.state_dict().items())
