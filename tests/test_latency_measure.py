"""The measurement protocol: statistics, presets, interleaving, and a real cost ordering on ORT CPU."""
import numpy as np
import onnx
import pytest
import torch
from torch import nn

from graphs.errors import InputError
from toolchain.latency.backends import get_backend
from toolchain.latency.backends.base import RunnerBase
from toolchain.latency.measure import Stats, interleaved_ratio, time_runner


def test_stats_match_numpy():
    times = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0]
    s = Stats.from_times(times)
    assert s.median == pytest.approx(np.median(times)) == pytest.approx(3.5)
    assert s.p90 == pytest.approx(np.percentile(times, 90))
    assert s.mean == pytest.approx(3.9)
    assert s.std == pytest.approx(np.std(times))
    assert s.cv == pytest.approx(np.std(times) / 3.9)
    assert s.count == 10
    with pytest.raises(ValueError):
        Stats.from_times([])


class Counter(RunnerBase):
    """A runner that counts its calls: timed_run is the base class's wall clock around run()."""

    def __init__(self, log=None, tag=""):
        self.calls, self.log, self.tag = 0, log, tag

    def run(self):
        self.calls += 1
        if self.log is not None:
            self.log.append(self.tag)


def test_time_runner_counts_warmups_apart():
    r = Counter()
    s = time_runner(r, warmup=3, runs=20)
    assert r.calls == 23 and s.count == 20


def test_timed_calls_go_through_timed_run():
    # GPU runners time themselves (CUDA events): the protocol must use timed_run, never its own clock
    r = Fixed([7.0])
    assert time_runner(r, warmup=2, runs=4).median == 7.0 and r.i == 4
    with pytest.raises(InputError):
        time_runner(r, runs=0)


def test_interleaving_alternates_who_goes_first():
    log = []
    res = interleaved_ratio(Counter(log, "c"), Counter(log, "r"), warmup=1, runs=3, pause_s=0,
                            target_se=None)
    assert "".join(log) == "crrccrrc"
    assert res.candidate.count == res.reference.count == 3


def _cnn(width: int) -> nn.Module:
    layers, c = [], 3
    for _ in range(4):
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        c = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10)).eval()


def export(module: nn.Module, path, shape=(1, 3, 56, 56)):
    torch.onnx.export(module, (torch.randn(*shape),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["out"],
                      dynamic_axes={"input": {0: "batch"}, "out": {0: "batch"}})
    m = onnx.load(str(path))
    m.ir_version = 10  # onnxruntime 1.31 reads IR <= 13
    onnx.save(m, str(path))
    return path


@pytest.fixture(scope="module")
def narrow_wide(tmp_path_factory):
    d = tmp_path_factory.mktemp("cnn")
    torch.manual_seed(0)
    return export(_cnn(16), d / "narrow.onnx"), export(_cnn(64), d / "wide.onnx")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_wider_model_is_not_faster(narrow_wide):
    narrow_path, wide_path = narrow_wide
    ort = get_backend("ort")
    with ort.prepare(narrow_path) as narrow, ort.prepare(wide_path) as wide:
        n = time_runner(narrow, warmup=5, runs=40)
        w = time_runner(wide, warmup=5, runs=40)
        assert w.median > n.median
        res = interleaved_ratio(wide, narrow, warmup=2, runs=15, target_se=None)
        assert res.ratio > 1, res
        assert res.reference.median < res.candidate.median


class Fixed(RunnerBase):
    """A runner whose 'time' is scripted: lets the estimator be checked exactly."""
    def __init__(self, times):
        self.times, self.i = list(times), 0

    def timed_run(self):
        self.i += 1
        return self.times[(self.i - 1) % len(self.times)]

    def run(self):
        pass


def test_pair_ratio_ignores_load_bursts():
    # a burst doubles both calls of the last 4 pairs: the ratio of medians moves, pair ratios do not
    cand = [1.2] * 5 + [2.4] * 4
    ref = [1.0] * 5 + [2.0] * 4
    res = interleaved_ratio(Fixed(cand), Fixed(ref), warmup=0, runs=9, pause_s=0)
    assert res.ratio == pytest.approx(1.2)
    assert res.ratio_se == pytest.approx(0.0)


def test_target_se_extends_runs():
    noisy = Fixed([1.0, 1.5, 0.8, 1.3, 0.9, 1.6, 1.1, 0.7])
    res = interleaved_ratio(noisy, Fixed([1.0]), warmup=0, runs=8, pause_s=0, target_se=1e-6, max_runs=20)
    assert res.candidate.count == 20
    res = interleaved_ratio(Fixed([1.0]), Fixed([1.0]), warmup=0, runs=8, pause_s=0, target_se=0.01)
    assert res.candidate.count == 8 and res.ratio == 1.0


def test_rewarm_adds_one_untimed_call():
    c, r = Counter(), Counter()
    interleaved_ratio(c, r, warmup=0, runs=3, pause_s=0, rewarm=True, target_se=None)
    assert c.calls == r.calls == 6
    quick = Fixed([1.0])  # 1 ms is over pause_s * 100 = 0.1 ms: only the very first call is rewarmed
    quick.run = lambda: setattr(quick, "warm", getattr(quick, "warm", 0) + 1)
    interleaved_ratio(quick, Fixed([1.0]), warmup=0, runs=3, pause_s=0.001, target_se=None)
    assert quick.warm == 1


def test_extension_stops_when_the_target_is_out_of_reach():
    noisy = Fixed([1.0, 1.5, 0.8, 1.3, 0.9, 1.6, 1.1, 0.7])  # se ~0.2 at 8 runs: 0.01 needs ~3,000
    res = interleaved_ratio(noisy, Fixed([1.0]), warmup=0, runs=8, pause_s=0, target_se=0.01, max_runs=20,
                            only_if_reachable=True)
    assert res.candidate.count == 8
    # within reach (se ~0.2 -> 0.15 needs ~14 runs): it extends as before
    noisy.i = 0
    res = interleaved_ratio(noisy, Fixed([1.0]), warmup=0, runs=8, pause_s=0, target_se=0.15, max_runs=20,
                            only_if_reachable=True)
    assert res.candidate.count > 8
