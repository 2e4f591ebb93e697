import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

# One thread: tests check numbers, not speed, and two workers must not fight over 2 cores.
torch.set_num_threads(1)

# Exported / compiled models go to a throwaway cache, never the user's (subprocesses inherit it);
# FASTSAL_TEST_CACHE names a folder to keep between runs instead.
# A folder made here is removed when the session ends (exported models fill hundreds of MB).
_MADE_CACHE = None if os.environ.get("FASTSAL_TEST_CACHE") else tempfile.mkdtemp(prefix="fastsal-test-cache-")
os.environ["FASTSAL_CACHE_DIR"] = os.environ.get("FASTSAL_TEST_CACHE") or _MADE_CACHE


def pytest_unconfigure(config) -> None:
    if _MADE_CACHE is not None:
        shutil.rmtree(_MADE_CACHE, ignore_errors=True)


OSIE_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "osie"
MIT1003_ROOT = OSIE_ROOT.parent / "mit1003"


@pytest.fixture(scope="session")
def osie_root() -> Path:
    if not (OSIE_ROOT / "eye" / "fixations.mat").is_file():
        pytest.skip("OSIE data (../shared/data/osie) not present")
    return OSIE_ROOT


@pytest.fixture(scope="session")
def mit1003_root() -> Path:
    if not (MIT1003_ROOT / "eye" / "fixations.mat").is_file():
        pytest.skip("MIT1003 data (../shared/data/mit1003) not present")
    return MIT1003_ROOT
