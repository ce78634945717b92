"""``--home`` before or after the command, and hostile input files fail in one line.

Run as users run it: the installed ``skyscore`` script in a subprocess (a traceback on stderr
is exactly what these tests look for).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from skyscore.adapters.local import LocalBlobStore
from skyscore.model.registry import ModelRegistry
from tiny_model import tiny_model

SKYSCORE = shutil.which("skyscore", path=str(Path(sys.executable).parent)) or "skyscore"


def skyscore(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SKYSCORE, *args], capture_output=True, text=True, check=False, cwd=cwd, timeout=120
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("home")
    registry = ModelRegistry(LocalBlobStore(root))
    card, data = tiny_model()
    registry.promote("tiny", registry.register(card, data).version)
    return root


def test_home_is_accepted_before_and_after_the_command(home: Path, tmp_path: Path) -> None:
    # run elsewhere, so the default home (./.skyscore) would have no models
    before = skyscore("--home", str(home), "models", cwd=tmp_path)
    after = skyscore("models", "--home", str(home), cwd=tmp_path)
    for result in (before, after):
        assert result.returncode == 0, result.stderr
        assert "tiny: versions 1; aliases: production -> 1" in result.stdout
    # both given: the one after the command wins (it is the more specific)
    both = skyscore(
        "--home", str(tmp_path / "elsewhere"), "models", "--home", str(home), cwd=tmp_path
    )
    assert "tiny: versions 1" in both.stdout, both.stderr
    assert "--home" in skyscore("--help", cwd=tmp_path).stdout


@pytest.mark.parametrize("depth", [1_000, 5_000, 20_000, 100_000])
@pytest.mark.parametrize("shape", ["array", "object"])
def test_deeply_nested_json_fails_in_one_line(
    home: Path, tmp_path: Path, depth: int, shape: str
) -> None:
    deep = (
        b"[" * depth + b"]" * depth
        if shape == "array"
        else b'[{"x1": ' + b'{"a":' * depth + b"1" + b"}" * depth + b', "x2": 1, "color": "red"}]'
    )
    source = tmp_path / "deep.json"
    source.write_bytes(deep)
    result = skyscore("score", str(source), "--model", "tiny", "--home", str(home), cwd=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    if result.returncode != 0:  # refused as a whole: one line naming the command and why
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("skyscore score: "), result.stderr
        assert "nested too deeply" in lines[0]
    else:  # or read, and the nested row reported as a bad row
        assert "1 bad rows reported" in result.stdout, result.stdout
