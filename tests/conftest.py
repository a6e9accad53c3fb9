"""Fixtures shared by every test package.

`shared` is the read-only folder beside the checkout (`../shared`): third-party corpora that
tests read in place and never copy into the repo.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CORPUS = SHARED / "corpus"


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The third-party corpus folder (`../shared/corpus`); skips if it is absent."""
    if not CORPUS.is_dir():
        pytest.skip("../shared/corpus is not present")
    return CORPUS
