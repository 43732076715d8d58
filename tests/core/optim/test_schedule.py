"""The learning-rate schedule and the early-stop rule (plain Python, no model)."""

from __future__ import annotations

import math

import pytest

from fvdesk.core.errors import ConfigError
from fvdesk.core.optim.schedule import EarlyStop, anneal_steps, learning_rate
from fvdesk.core.optim.settings import RenderSettings


def test_learning_rate_is_constant_then_a_cosine_down_to_the_final_fraction() -> None:
    lrs = [learning_rate(s, 100, 0.05, 40, 0.1) for s in range(1, 101)]
    assert lrs[:60] == [0.05] * 60  # constant until the last 40 steps
    assert all(a >= b for a, b in zip(lrs[59:], lrs[60:], strict=False))  # then falls
    assert lrs[-1] == pytest.approx(0.005)  # to lr_final * lr at the last step
    assert lrs[79] == pytest.approx(0.05 * (0.1 + 0.9 * 0.5))  # half way: the cosine's middle
    assert learning_rate(50, 100, 0.05, 0, 0.0) == 0.05  # no anneal: constant


def test_anneal_steps_is_the_fraction_of_the_render_clamped() -> None:
    assert anneal_steps(512, 0.25) == 128
    assert anneal_steps(10, 0.0) == 0
    assert anneal_steps(10, 1.0) == 10


def test_early_stop_waits_for_two_windows_then_stops_when_no_image_gains() -> None:
    stop = EarlyStop(0.01, 4)
    rising = [[float(s), 2.0 * s] for s in range(1, 13)]
    assert not any(stop.update(s, v) for s, v in enumerate(rising, 1))
    flat = [[12.0 + 0.01 * (s % 2), 24.0] for s in range(13, 25)]
    fired = [s for s, v in enumerate(flat, 13) if stop.update(s, v)]
    assert stop.converged_at == 20  # the first window after the plateau began compares equal
    assert fired[0] == 20


def test_early_stop_needs_every_image_to_converge_and_ignores_noise_within_a_window() -> None:
    stop = EarlyStop(0.02, 8)
    for s in range(1, 200):
        noisy = 10.0 + (1.0 if s % 2 else -1.0)  # +-10 % step to step, no trend
        climbing = float(s)  # the other image still gains
        assert not stop.update(s, [noisy, climbing])
    assert stop.converged_at is None
    assert not EarlyStop(0.0, 8).enabled


def test_early_stop_settings_are_validated_and_recorded() -> None:
    s = RenderSettings(early_stop=0.01, early_stop_window=16, lr_anneal=0.3, lr_final=0.1)
    d = s.to_dict()
    assert (d["early_stop"], d["early_stop_window"], d["lr_anneal"], d["lr_final"]) == (
        0.01,
        16,
        0.3,
        0.1,
    )
    assert RenderSettings.from_dict(d) == s
    for bad in (
        {"early_stop": -0.1},
        {"early_stop": math.nan},
        {"early_stop_window": 0},
        {"early_stop_window": 2.5},
        {"lr_anneal": 1.5},
        {"lr_final": -0.1},
        {"lr_anneal": math.nan},
    ):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            RenderSettings(**bad)
