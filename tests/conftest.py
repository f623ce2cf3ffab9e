import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import FAMILIES, fresh_tokenizer, make_model, make_tokenizer  # noqa: E402

from shared_paths import SHARED  # noqa: E402,F401  (re-exported for tests that ask conftest)


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
def embedded():
    """(model, tokenizer) of the embedded SmolLM2-135M-Instruct (cached after first load)."""
    from activation_steering.models import load_default_model

    return load_default_model()
