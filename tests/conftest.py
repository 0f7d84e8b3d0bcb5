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


@pytest.fixture(scope="session")
def digits_resnet20(tmp_path_factory):
    """builtin:resnet20 trained 2 epochs on digits (about 89% val, seeded) and exported at 28x28: a model whose
    pruned versions' accuracies differ, for tests that rank them."""
    from toolchain.baseline import train_baseline
    from toolchain.export import export_spec
    from toolchain.train import TrainConfig

    work = tmp_path_factory.mktemp("digits")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as one_thread: a tiny model's epoch is 25x slower on a shared pool
    try:
        trained = train_baseline("builtin:resnet20", "digits", str(work / "w.safetensors"),
                                 TrainConfig(epochs=2, lr=0.05, batch_size=64))
    finally:
        torch.set_num_threads(threads)
    export_spec("builtin:resnet20", str(work / "m.onnx"), (1, 3, 28, 28), checkpoint=str(work / "w.safetensors"),
                num_classes=10)
    return work / "m.onnx", trained["val"]["top1"]


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
