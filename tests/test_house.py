"""The house rules, checked by machines: the layer contract and no import circles (import-linter,
configured in pyproject.toml), lint and format (ruff). Each check is also run on a temporary copy
of the tree with a planted violation, so it is known to bite."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "llmkit"
LINT_IMPORTS = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter on the tree under ``root`` (its own src/ first on the path)."""
    return subprocess.run(
        [LINT_IMPORTS, str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root / "src"), "PATH": str(Path(sys.executable).parent)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def ruff(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree_copy(tmp_path):
    """A copy of the package and its configuration, to plant violations in."""
    shutil.copytree(PACKAGE, tmp_path / "src" / "llmkit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_layers_hold_and_there_are_no_import_circles():
    r = lint_imports(ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "llmkit layers KEPT" in r.stdout and "no import circles KEPT" in r.stdout


def test_the_import_contracts_bite(tree_copy):
    pkg = tree_copy / "src" / "llmkit"
    assert lint_imports(tree_copy).returncode == 0  # the copy itself is clean
    # an upward import: the config floor reaching up to the pipeline
    with open(pkg / "config.py", "a", encoding="utf-8") as f:
        f.write("\n\ndef _planted():\n    from llmkit.pipeline import run\n\n    return run\n")
    # a circle inside one floor: rope <-> transformer
    with open(pkg / "model" / "rope.py", "a", encoding="utf-8") as f:
        f.write("\n\ndef _planted():\n    from llmkit.model import transformer\n\n    return transformer\n")
    r = lint_imports(tree_copy)
    assert r.returncode != 0
    assert "llmkit layers BROKEN" in r.stdout and "llmkit.config -> llmkit.pipeline" in r.stdout, r.stdout[-3000:]
    assert "no import circles BROKEN" in r.stdout, r.stdout[-3000:]
    assert "No cycles are allowed in llmkit.model." in r.stdout and ".transformer -> .rope" in r.stdout, r.stdout[
        -3000:
    ]


def test_a_new_top_level_package_must_name_its_floor(tree_copy):
    (tree_copy / "src" / "llmkit" / "newroom").mkdir()
    (tree_copy / "src" / "llmkit" / "newroom" / "__init__.py").write_text('"""Not yet in the layer list."""\n')
    r = lint_imports(tree_copy)
    assert r.returncode != 0
    assert "llmkit.newroom" in r.stdout + r.stderr, r.stdout[-3000:] + r.stderr[-2000:]


def test_ruff_lint_and_format_are_clean():
    r = ruff("check", "src", "tests", "benchmarks")
    assert r.returncode == 0, r.stdout[-3000:]
    r = ruff("format", "--check", "src", "tests", "benchmarks")
    assert r.returncode == 0, r.stdout[-3000:] + "\nrun: ruff format src tests benchmarks"


def test_ruff_bites(tree_copy):
    target = tree_copy / "src" / "llmkit" / "console.py"
    assert ruff("check", "src", cwd=tree_copy).returncode == 0
    target.write_text(target.read_text(encoding="utf-8").replace("import sys\n", "import os\nimport sys\n"))
    r = ruff("check", "src", cwd=tree_copy)
    assert r.returncode != 0 and "F401" in r.stdout and "console.py" in r.stdout, r.stdout[-2000:]
    target.write_text(target.read_text(encoding="utf-8").replace("import os\n", "") + "x = {  'a':1 }\n")
    r = ruff("format", "--check", "src", cwd=tree_copy)
    assert r.returncode != 0 and "console.py" in r.stdout, r.stdout[-2000:]
