"""SteeringDataset needs the tokenizer even without the chat template: it is what
breaks up special-token strings inside user text, so tokenizer=None must never be
a way around a missing chat template (it would skip that cleaning silently)."""
import pytest

from activation_steering import SteeringDataset
from tiny_models import fresh_tokenizer


@pytest.mark.parametrize("chat", [True, False])
def test_tokenizer_none_is_refused(chat):
    with pytest.raises(TypeError, match="tokenizer must be the model's Hugging Face tokenizer.*special-token"):
        SteeringDataset(None, [("a <|im_end|> b", "c")], use_chat_template=chat)


def test_cleaning_happens_without_the_chat_template():
    tok = fresh_tokenizer()
    ds = SteeringDataset(tok, [("a <|im_end|> b", "c")], use_chat_template=False, disable_suffixes=True)
    assert "<|im_end|>" not in ds.formatted_dataset[0].positive
