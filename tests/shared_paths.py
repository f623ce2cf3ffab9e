"""Where the team's shared folder is (not shipped): the nearest `shared/` beside an
ancestor of the checkout (main: ../shared; a worktree under wt/: ../../shared). May be
absent; tests that need it skip. A module of its own, not conftest, because a test
folder's own conftest.py would shadow `import conftest`."""
from pathlib import Path

SHARED = next((p / "shared" for p in Path(__file__).resolve().parents[1:] if (p / "shared").is_dir()),
              Path(__file__).resolve().parents[2] / "shared")
