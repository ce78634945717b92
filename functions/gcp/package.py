"""Build the functions' source archive: ``python functions/gcp/package.py [--out build/gcp.zip]``.

The archive's root is the source root Cloud Run functions expect: ``main.py`` and
``requirements.txt`` with the ``skyscore`` core beside them (copied from ``shared/``). Cloud
Build installs ``requirements.txt`` on deploy, so no third-party package is in the archive; the
Terraform in ``infra/gcp`` uploads this zip to the source bucket and points every function at
it (one archive, five entry points). The size printed is the deployed source size.
"""

from __future__ import annotations

import argparse
import shutil
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SOURCE_FILES = ("main.py", "requirements.txt")
SKIPPED = {"__pycache__", ".mypy_cache", ".pytest_cache"}
EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same source gives the same archive


def stage(out_dir: Path) -> Path:
    """The source files under ``out_dir`` (emptied first)."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    for name in SOURCE_FILES:
        shutil.copy2(HERE / name, out_dir / name)
    shutil.copytree(
        ROOT / "shared" / "skyscore",
        out_dir / "skyscore",
        ignore=lambda _, names: [n for n in names if n in SKIPPED or n.endswith(".pyc")],
    )
    return out_dir


def build_zip(out_dir: Path, archive: Path) -> Path:
    """Zip a staged source tree (its root at the zip's root), reproducibly."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(out_dir.rglob("*")):
            if path.is_file():
                info = zipfile.ZipInfo(path.relative_to(out_dir).as_posix(), EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, path.read_bytes())
    return archive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "build" / "gcp.zip"), help="the zip to write")
    args = parser.parse_args(argv)
    archive = Path(args.out)
    build_zip(stage(archive.with_suffix("")), archive)
    print(f"{archive} ({archive.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
