"""trainer.precision=auto: bf16 autocast only where the device computes bf16 natively (emulated
bf16 made a CPU training step 20x slower than fp32), and an explicit emulated bf16 is kept but
warned about."""

from __future__ import annotations

import logging

import pytest
import torch

from posesuite.tasks import common
from posesuite.tasks.common import resolve_precision


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_on_a_cpu_takes_bf16_only_where_it_is_native(monkeypatch, native, expected):
    monkeypatch.setattr(common, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", "cpu") == expected


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16-mixed"), (False, "16-mixed")])
def test_auto_on_a_gpu_falls_back_to_fp16_autocast(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    assert resolve_precision("auto", "gpu") == expected


def test_an_explicit_precision_is_kept_and_emulated_bf16_is_named(monkeypatch, caplog):
    monkeypatch.setattr(common, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger=common.log.name):
        assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
    assert "trainer.precision=bf16-mixed on a CPU without native bf16" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=common.log.name):
        assert resolve_precision("32-true", "cpu") == "32-true"
    assert not caplog.text
