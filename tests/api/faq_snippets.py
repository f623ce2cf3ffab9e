"""The FAQ (shared/reference/faq.md, found by shared_paths.SHARED) and the check that a test's snippets are
verbatim copies of it, shared by test_faq_extraction.py and test_faq_steering.py."""
import pytest
from shared_paths import SHARED

FAQ = SHARED / "reference" / "faq.md"


def _lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def assert_snippets_in_faq(snippets: list[str]) -> None:
    """Each snippet's non-blank lines appear, in order and adjacent, in the FAQ.

    Snippets are Python string literals, so a "\\\\n" inside one is the FAQ's "\\n"."""
    if not FAQ.is_file():
        pytest.skip(f"{FAQ} is not present in this checkout")
    faq = _lines(FAQ.read_text())
    for snippet in snippets:
        want = _lines(snippet.replace("\\\\n", "\\n"))
        starts = [i for i, ln in enumerate(faq) if ln == want[0]]
        assert any(faq[i:i + len(want)] == want for i in starts), f"snippet not found verbatim:\n{snippet}"
