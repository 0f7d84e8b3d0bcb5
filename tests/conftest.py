import warnings

import pytest

warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture(scope="session")
def resnet20_onnx(tmp_path_factory):
    """builtin:resnet20 exported once for the session (the CIFAR ResNet of the papers)."""
    from toolchain.export import export_spec

    path = tmp_path_factory.mktemp("models") / "resnet20.onnx"
    export_spec("builtin:resnet20", str(path))
    return path
