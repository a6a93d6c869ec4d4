"""NeuroAuth: continuous authentication from EEG.

The package maps the repository's folders into one namespace:
``neuroauth.models`` (pure compute), ``neuroauth.training`` (data, training,
evaluation), ``neuroauth.enroll`` (owners and templates) and
``neuroauth.daemon`` (the ``neuroauthd`` service).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("neuroauth")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
