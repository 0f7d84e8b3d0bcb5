import warnings

import pytest
import torch

warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture(scope="session")
def resnet20_onnx(tmp_path_factory):
    """builtin:resnet20 exported once for the session (the CIFAR ResNet of the papers)."""
    from toolchain.export import export_spec

    path = tmp_path_factory.mktemp("models") / "resnet20.onnx"
    export_spec("builtin:resnet20", str(path))
    return path


@pytest.fixture
def one_thread():
    """On a shared 2-core host, torch's thread pool makes a tiny model's epoch 25x slower (56 s vs 2 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def watched_entries(monkeypatch) -> list[float]:
    """The ratio of every latency-table entry a profiling session times, as timed: real measurements,
    watched on their way to the store (toolchain/latency/lut.py's measure_pair)."""
    from toolchain.latency import lut

    timed, measure_pair = [], lut.measure_pair

    def watched(*args, **kwargs):
        values = measure_pair(*args, **kwargs)
        timed.append(values["ratio"])
        return values

    monkeypatch.setattr(lut, "measure_pair", watched)
    return timed
