"""NeuroAuth: continuous authentication from EEG.

The package maps the repository's folders into one namespace:
``neuroauth.models`` (pure compute), ``neuroauth.training`` (data, training,
evaluation), ``neuroauth.enroll`` (owners and templates) and
``neuroauth.daemon`` (the ``neuroauthd`` service).
"""

from __future__ import annotations

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    """``__version__``, looked up when asked for: importing the package stays cheap, so that
    ``neuroauthd`` holds stop signals within moments of starting."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("neuroauth")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0"
