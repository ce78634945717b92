"""The local home: one directory holding the embedded runtime's models, inbox and outputs.

Resolved from ``--home``, else ``SKYSCORE_HOME``, else ``./.skyscore``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from skyscore.model.registry import ModelRegistry

DEFAULT_HOME = ".skyscore"


@dataclass(frozen=True, slots=True)
class LocalHome:
    """Paths of a local home; ``models/`` is a blob store rooted at the home itself."""

    root: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike[str] | None = None) -> LocalHome:
        """``home`` if given, else ``$SKYSCORE_HOME``, else ``./.skyscore`` (made absolute)."""
        chosen = home or os.environ.get("SKYSCORE_HOME") or DEFAULT_HOME
        return cls(Path(chosen).expanduser().resolve())

    @property
    def inbox(self) -> Path:
        """Files dropped here are scored (``inbox/<model>/file.csv`` picks the model)."""
        return self.root / "inbox"

    @property
    def predictions(self) -> Path:
        """Scored outputs, their error reports and manifests."""
        return self.root / "predictions"

    @property
    def training(self) -> Path:
        """Labelled data for retraining, under ``training/<model>/``."""
        return self.root / "training"

    def ensure(self) -> LocalHome:
        """Create the standard directories."""
        for path in (self.root, self.inbox, self.predictions, self.training):
            path.mkdir(parents=True, exist_ok=True)
        return self

    def registry(self, *, refresh_seconds: float | None = None) -> ModelRegistry:
        """The model registry over this home (``models/<name>/<version>/``)."""
        from skyscore.adapters.local import LocalBlobStore
        from skyscore.model.registry import ModelRegistry

        store = LocalBlobStore(self.root)
        if refresh_seconds is None:
            return ModelRegistry(store)
        return ModelRegistry(store, refresh_seconds=refresh_seconds)
