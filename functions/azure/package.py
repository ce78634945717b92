"""Build the function app's zip for a zip deploy: ``python functions/azure/package.py``.

The zip's root is the app root the Functions host expects: ``function_app.py``, ``host.json``,
``requirements.txt`` and the ``skyscore`` core beside them (copied from ``shared/``). By default
the third-party packages are left to the remote build (``--build-remote true``, which runs
``pip install -r requirements.txt`` on the platform); ``--deps`` installs Linux x86-64 wheels for
Python 3.13 into ``.python_packages/lib/site-packages`` instead, for a deploy without a build.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
APP_FILES = ("function_app.py", "host.json", "requirements.txt")
SITE_PACKAGES = Path(".python_packages/lib/site-packages")
SKIPPED = {"__pycache__", ".mypy_cache", ".pytest_cache"}


def _copy_tree(source: Path, target: Path) -> None:
    shutil.copytree(
        source,
        target,
        ignore=lambda _, names: [n for n in names if n in SKIPPED or n.endswith(".pyc")],
    )


def stage(out_dir: Path, *, deps: bool = False, python: str = "3.13") -> Path:
    """The app's files under ``out_dir`` (emptied first)."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    for name in APP_FILES:
        shutil.copy2(HERE / name, out_dir / name)
    _copy_tree(ROOT / "shared" / "skyscore", out_dir / "skyscore")
    if deps:
        target = out_dir / SITE_PACKAGES
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--only-binary=:all:",
                "--platform",
                "manylinux_2_28_x86_64",
                "--python-version",
                python,
                "--implementation",
                "cp",
                "--target",
                str(target),
                "-r",
                str(HERE / "requirements.txt"),
            ],
            check=True,
        )
    return out_dir


def build_zip(out_dir: Path, archive: Path) -> Path:
    """Zip a staged app (its root at the zip's root)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(out_dir.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(out_dir).as_posix())
    return archive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "build" / "azure.zip"), help="the zip to write")
    parser.add_argument(
        "--deps", action="store_true", help="bundle the Linux wheels (no remote build)"
    )
    args = parser.parse_args(argv)
    archive = Path(args.out)
    staged = stage(archive.with_suffix(""), deps=args.deps)
    build_zip(staged, archive)
    print(f"{archive} ({archive.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
