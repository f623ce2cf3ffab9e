import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import FAMILIES, fresh_tokenizer, make_model, make_tokenizer  # noqa: E402

from shared_paths import SHARED  # noqa: E402,F401  (re-exported for tests that ask conftest)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and lose a lot on a busy machine (modules opt in
    with pytestmark = pytest.mark.usefixtures("one_thread"))."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture
def tokenizer():
    return fresh_tokenizer()


@pytest.fixture
def tiny_llama():
    return make_model("llama")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A tiny llama and its tokenizer saved as a model folder (what the CLI loads)."""
    d = tmp_path_factory.mktemp("tiny_llama")
    make_model("llama").save_pretrained(d)
    make_tokenizer().save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def embedded():
    """(model, tokenizer) of the embedded SmolLM2-135M-Instruct (cached after first load)."""
    from activation_steering.models import load_default_model

    return load_default_model()
