"""``amp="auto"``: bf16 on a CPU only where it is native, fp32 elsewhere, autocast on CUDA; the choice recorded.

The CPU's capability is mocked both ways, so every branch is checked on whichever CPU runs the tests.
"""

from __future__ import annotations

import argparse
import logging

import pytest
import torch
import torch.nn as nn
from helpers import SmallCNN, toy_dataset

import monai_adv.precision as precision
from monai_adv.engines import RobustEvaluator, SupervisedAdversarialTrainer
from monai_adv.handlers import RobustnessReport
from monai_adv.precision import (
    PRECISION_AMP,
    add_precision_argument,
    parse_amp,
    precision_record,
    resolve_precision,
)
from monai_adv.transforms import FGSM, PGD


@pytest.fixture
def native_bf16(monkeypatch):
    """Set what the CPU is said to run natively: ``native_bf16(True)`` or ``native_bf16(False)``."""

    def set_native(value: bool) -> None:
        monkeypatch.setattr(precision, "bf16_is_fast_on_cpu", lambda: value)
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: value)

    return set_native


@pytest.mark.parametrize(
    "value, expected",
    [("auto", "auto"), ("AUTO", "auto"), (True, True), (False, False), ("true", True), ("false", False),
     ("fp32", False), (1, True), (0, False)],
)  # fmt: skip
def test_parse_amp_reads_configs_and_cli_spellings(value, expected):
    assert parse_amp(value) == expected


@pytest.mark.parametrize("value", ["maybe", 2, None, 0.5, "bf17"])
def test_parse_amp_names_a_bad_value(value):
    with pytest.raises(ValueError, match="amp must be 'auto', True or False"):
        parse_amp(value)


def test_auto_on_a_cpu_without_native_bf16_is_fp32_with_channels_last(native_bf16):
    native_bf16(False)
    p = resolve_precision("auto", "cpu")
    assert (p.amp, p.dtype, p.channels_last, p.name) == (False, None, True, "fp32")


def test_auto_on_a_cpu_with_native_bf16_is_bf16(native_bf16):
    native_bf16(True)
    p = resolve_precision("auto", "cpu")
    assert (p.amp, p.dtype, p.name) == (True, torch.bfloat16, "bf16")
    # fp16 is emulated on CPUs: "auto" never picks it there
    assert not resolve_precision("auto", "cpu", amp_dtype=torch.float16).amp


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_cuda_is_autocast_whatever_the_cpu(native_bf16, native):
    native_bf16(native)
    p = resolve_precision("auto", "cuda")
    assert (p.amp, p.dtype, p.name) == (True, torch.float16, "fp16")
    assert resolve_precision("auto", "cuda", amp_dtype="bfloat16").dtype == torch.bfloat16
    assert not resolve_precision("auto", "cuda", channels_last=False).channels_last


@pytest.mark.parametrize("native", [True, False])
def test_explicit_true_and_false_still_force(native_bf16, native):
    native_bf16(native)
    assert resolve_precision(True, "cpu").name == "bf16"
    assert resolve_precision(False, "cpu").name == "fp32"
    assert resolve_precision(False, "cuda").name == "fp32"
    assert not resolve_precision(True, "cpu", channels_last=False).channels_last


def test_unknown_cpu_is_timed_once_and_the_faster_kept(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: None)
    calls = []

    def fake_time(dtype, reps=3):
        calls.append(dtype)
        return 1.0 if dtype is None else 3.0  # bf16 three times slower: emulated

    monkeypatch.setattr(precision, "_time_pass", fake_time)
    precision.bf16_is_fast_on_cpu.cache_clear()
    try:
        assert precision.bf16_is_fast_on_cpu() is False
        assert precision.bf16_is_fast_on_cpu() is False  # cached: timed once per process
        assert calls == [torch.bfloat16, None]
    finally:
        precision.bf16_is_fast_on_cpu.cache_clear()


def test_the_real_timing_probe_runs_and_returns_a_time():
    assert precision._time_pass(None, reps=1) > 0


def test_environment_overrides_the_cpu_flags(monkeypatch):
    precision.cpu_has_native_bf16.cache_clear()
    try:
        monkeypatch.setenv("MONAI_ADV_NATIVE_BF16", "1")
        assert precision.cpu_has_native_bf16() is True
        precision.cpu_has_native_bf16.cache_clear()
        monkeypatch.setenv("MONAI_ADV_NATIVE_BF16", "0")
        assert precision.cpu_has_native_bf16() is False
    finally:
        precision.cpu_has_native_bf16.cache_clear()


def test_cpu_flags_are_read_where_linux_lists_them(monkeypatch):
    precision.cpu_has_native_bf16.cache_clear()
    monkeypatch.delenv("MONAI_ADV_NATIVE_BF16", raising=False)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: False, raising=False)
    try:
        monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx2", "fma", "avx512_bf16"})
        assert precision.cpu_has_native_bf16() is True
        precision.cpu_has_native_bf16.cache_clear()
        monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx2", "fma"})
        assert precision.cpu_has_native_bf16() is False
        precision.cpu_has_native_bf16.cache_clear()
        monkeypatch.setattr(precision, "_cpu_flags", lambda: None)
        assert precision.cpu_has_native_bf16() is None  # then bf16_is_fast_on_cpu times it
    finally:
        precision.cpu_has_native_bf16.cache_clear()


def test_the_record_names_precision_layout_and_cpu(native_bf16):
    native_bf16(False)
    rec = precision_record("auto", "cpu")
    assert rec["precision"] == "fp32" and rec["channels_last"] is True and rec["amp_requested"] == "auto"
    assert rec["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    native_bf16(True)
    assert precision_record("auto", "cpu")["precision"] == "bf16"


def test_the_choice_is_logged_once(native_bf16, caplog):
    native_bf16(False)
    precision._LOGGED.clear()
    with caplog.at_level(logging.INFO, logger="monai_adv.precision"):
        for _ in range(3):
            precision.log_precision(resolve_precision("auto", "cpu"), "test")
    lines = [r.getMessage() for r in caplog.records if "computes in" in r.getMessage()]
    assert len(lines) == 1 and "fp32" in lines[0] and torch.backends.cpu.get_cpu_capability() in lines[0]


# ------------------------------------------------------------------------------------------------
# attacks and engines
# ------------------------------------------------------------------------------------------------
def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return SmallCNN(width=8).eval()


class DtypeRecorder:
    def __init__(self, module: nn.Module) -> None:
        self.dtypes: list[torch.dtype] = []
        module.register_forward_hook(lambda m, i, o: self.dtypes.append(o.dtype))


@pytest.mark.parametrize("native, dtype", [(False, torch.float32), (True, torch.bfloat16)])
def test_attack_with_auto_runs_the_network_in_the_chosen_precision(native_bf16, native, dtype):
    native_bf16(native)
    net = _net()
    rec = DtypeRecorder(next(m for m in net.modules() if isinstance(m, nn.Conv2d)))
    x, y = toy_dataset(8, seed=3)
    atk = PGD(net, eps=0.03, alpha=0.01, steps=3, amp="auto")
    x_adv = atk(x, y)
    assert atk.amp is native and atk.precision.name == ("bf16" if native else "fp32")
    assert set(rec.dtypes) == {dtype}
    # the invariants hold in either precision: same dtype, inside the eps-ball and the range
    assert x_adv.dtype == x.dtype and x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= 0.03 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1


def test_attack_channels_last_auto_converts_the_network_on_cpu(native_bf16):
    native_bf16(False)
    net = _net()
    x, y = toy_dataset(4, seed=3)
    FGSM(net, eps=0.01, amp="auto", channels_last="auto")(x, y)
    conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_attack_default_stays_full_precision_and_reproducible(native_bf16):
    # the library classes default to amp=False (explicit, as MONAI's engines and torchattacks do);
    # the bundles, demos, experiments and benchmarks ask for "auto"
    native_bf16(True)
    atk = FGSM(_net(), eps=0.01)
    assert atk.amp is False and atk.amp_request is False


def _trainer(net, amp):
    x, y = toy_dataset(16, seed=1)
    return SupervisedAdversarialTrainer(
        "cpu",
        1,
        [{"image": x, "label": y}],
        net,
        torch.optim.SGD(net.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        FGSM(net, eps=0.01),
        decollate=False,
        amp=amp,
    )


@pytest.mark.parametrize("native", [True, False])
def test_engines_resolve_auto_for_their_device(native_bf16, native):
    native_bf16(native)
    net = _net()
    trainer = _trainer(net, "auto")
    assert trainer.amp is native and trainer.precision.name == ("bf16" if native else "fp32")
    assert trainer.attack.amp is native
    trainer.run()
    evaluator = RobustEvaluator(
        "cpu", _trainer(net, False).data_loader, net, {"fgsm": FGSM(net, 0.01)}, amp="auto"
    )
    assert evaluator.amp is native and evaluator.attacks["fgsm"].amp is native


def test_engines_refuse_a_bad_amp():
    with pytest.raises(ValueError, match="amp must be 'auto', True or False, got 'sometimes'"):
        _trainer(_net(), "sometimes")


def test_the_robustness_report_records_the_precision(native_bf16, tmp_path):
    native_bf16(False)
    net = _net()
    x, y = toy_dataset(8, seed=4)
    evaluator = RobustEvaluator(
        "cpu", [{"image": x, "label": y}], net, {"fgsm": FGSM(net, 0.01)}, amp="auto", decollate=False
    )
    report = RobustnessReport(str(tmp_path))
    report.attach(evaluator)
    evaluator.run()
    compute = report.report["compute"]
    assert compute["precision"] == "fp32" and compute["amp_requested"] == "auto"
    assert compute["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_precision_argument_and_its_deprecated_spelling():
    p = argparse.ArgumentParser()
    add_precision_argument(p)
    assert PRECISION_AMP[p.parse_args([]).precision] == "auto"
    assert PRECISION_AMP[p.parse_args(["--precision", "bf16"]).precision] is True
    assert PRECISION_AMP[p.parse_args(["--no-amp"]).precision] is False
    with pytest.raises(SystemExit):
        p.parse_args(["--precision", "fp8"])


@pytest.mark.parametrize("native", [True, False])
def test_detector_feature_pass_follows_amp_auto(native_bf16, native):
    from monai_adv.detectors import MahalanobisDetector

    native_bf16(native)
    net = _net()
    rec = DtypeRecorder(next(m for m in net.modules() if isinstance(m, nn.Conv2d)))
    x, y = toy_dataset(32, seed=5)
    det = MahalanobisDetector(net, progress=False, amp="auto").fit([(x, y)])
    scores = det.score(x[:4])
    assert set(rec.dtypes) == {torch.bfloat16 if native else torch.float32}
    assert scores.dtype in (torch.float32, torch.float64) and torch.isfinite(scores).all()
    with pytest.raises(ValueError, match="amp must be"):
        MahalanobisDetector(net, amp="often")


def test_the_demo_comparison_says_how_the_numbers_were_computed():
    from monai_adv.bundle import compare_reports

    compute = {"precision": "fp32", "channels_last": True, "device": "cpu", "cpu_capability": "AVX2"}
    report = {"task": "classification", "metric": "accuracy", "clean": 0.9, "attacks": [], "compute": compute}
    table = compare_reports({"a": report, "b": report})
    assert "Computed in fp32, channels-last on cpu (CPU capability AVX2)." in table
    other = {**report, "compute": {**compute, "precision": "bf16", "cpu_capability": "AVX512"}}
    assert "a: fp32, channels-last on cpu (CPU capability AVX2); b: bf16" in compare_reports(
        {"a": report, "b": other}
    )
    assert "Computed" not in compare_reports({"a": {k: v for k, v in report.items() if k != "compute"}})
