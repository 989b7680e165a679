"""Test-wide settings: offline hub, few threads (CI has 2 cores), repository root on hand."""
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TQDM_MININTERVAL", "5")

from shared.launch import pin_numerics  # noqa: E402  (stdlib only; before anything loads torch or numpy)

pin_numerics(os.environ)

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (CI has 2 cores), the previous count given back after it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def digits_tiny(tmp_path_factory) -> Path:
    """The toy digits dataset at tiny scale (160 train / 80 test images), prepared once per session."""
    from shared.toy import prepare

    out = tmp_path_factory.mktemp("digits") / "digits"
    prepare.main({"scale": "tiny", "out_dir": str(out)})
    return out
