"""Checkpoints: one file that rebuilds its own models, loaded without unpickling objects.

The file is a ``torch.save`` of plain containers only: a JSON string with
everything needed to rebuild the models (montage, signal spec, denoiser and
embedder hyper-parameters, training record) and a flat dict of tensors.
Loading uses ``torch.load(weights_only=True)``, which refuses any pickled
object other than tensors and primitive containers.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from ..atomic import atomic_write
from ..errors import CheckpointError
from .cohort import Cohort, ScoreSequences
from .denoiser import CausalDenoiser, DenoiserConfig
from .embedders.fused import FusedConfig, FusedEmbedder
from .embedders.resnet import ResNetConfig, ResNetEmbedder
from .embedders.spectral import SpectralConfig, SpectralEmbedder
from .embedders.spectral_metric import SpectralMetricConfig, SpectralMetricEmbedder
from .embedders.temporal import TemporalConfig, TemporalEmbedder
from .preprocess import SignalSpec

FORMAT = "neuroauth-checkpoint"
FORMAT_VERSION = 1
MAX_CHECKPOINT_BYTES = 512 * 2**20  # the shipped ones are a few MB; a learned embedder adds tens

EMBEDDERS: dict[str, tuple[type, type]] = {
    "spectral": (SpectralEmbedder, SpectralConfig),
    "spectral-metric": (SpectralMetricEmbedder, SpectralMetricConfig),
    "resnet": (ResNetEmbedder, ResNetConfig),
    "temporal": (TemporalEmbedder, TemporalConfig),
    "fused": (FusedEmbedder, FusedConfig),
}


@dataclass
class NeuroAuthModel:
    """The models of one checkpoint and what they expect of the signal."""

    montage: tuple[str, ...]
    spec: SignalSpec
    denoiser: CausalDenoiser
    embedder: nn.Module
    baseline: dict[str, torch.Tensor] = field(default_factory=dict)  # PSD baseline statistics
    baseline_config: dict = field(default_factory=dict)  # its feature settings (SpectralConfig)
    meta: dict = field(default_factory=dict)
    cohort: Cohort | None = None  # background impostors for enrollment (training subjects' windows)
    calibration: ScoreSequences | None = None  # unseen people's score sequences for the decision over time

    @property
    def embedder_name(self) -> str:
        return self.embedder.name

    def config(self) -> dict:
        config = {
            "montage": list(self.montage),
            "signal": self.spec.to_dict(),
            "denoiser": self.denoiser.config.to_dict(),
            "embedder": {"name": self.embedder.name, "config": self.embedder.config.to_dict()},
            "baseline": self.baseline_config,
            "meta": self.meta,
        }
        if self.cohort is not None:  # absent, not null, so that older checkpoints keep their identity
            config["cohort"] = self.cohort.config()
        if self.calibration is not None:
            config["calibration"] = self.calibration.config()
        return config

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f"denoiser.{k}": v for k, v in self.denoiser.state_dict().items()}
        out.update({f"embedder.{k}": v for k, v in self.embedder.state_dict().items()})
        out.update({f"baseline.{k}": v for k, v in self.baseline.items()})
        if self.cohort is not None:
            out.update({f"cohort.{k}": v for k, v in self.cohort.tensors().items()})
        if self.calibration is not None:
            out.update({f"calibration.{k}": v for k, v in self.calibration.tensors().items()})
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    def identity(self) -> str:
        """A digest of configuration and weights: templates name the model they came from."""
        return _digest(self.config(), self.tensors())

    def eval(self) -> NeuroAuthModel:
        self.denoiser.eval()
        self.embedder.eval()
        return self


def _digest(config: dict, tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name, tensor in sorted(tensors.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def save_checkpoint(model: NeuroAuthModel, path: str | os.PathLike) -> str:
    """Write atomically (temporary file, fsync, rename); returns the model's identity."""
    path = Path(path)
    identity = model.identity()
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "identity": identity,
        "config": json.dumps(model.config(), sort_keys=True),
        "tensors": model.tensors(),
    }
    atomic_torch_save(payload, path)
    return identity


def atomic_torch_save(payload: dict, path: Path) -> None:
    """``torch.save`` to a sibling temporary file, then rename it over ``path``."""
    atomic_write(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | os.PathLike) -> NeuroAuthModel:
    """Rebuild the models of a checkpoint file; raises :class:`CheckpointError` with the fix."""
    path = Path(path)
    handle = _open_plain_file(path)
    try:
        with handle:
            payload = torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"checkpoint {path} holds pickled objects that are not plain tensors and containers; "
            "it was not written by `neuroauth train` and was refused without running it "
            f"({str(exc).splitlines()[0]}). Use a checkpoint written by `neuroauth train`."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is damaged or truncated ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); restore it or train again"
        ) from None
    return _rebuild(payload, path)


def _open_plain_file(path: Path) -> BinaryIO:
    """``path`` opened for reading: a plain file, not a symbolic link, of a checkpoint's size at most."""
    try:
        # O_NOFOLLOW: a link is refused, not followed; O_NONBLOCK: opening a FIFO does not hang
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint {path} does not exist; train one with `neuroauth train` or omit "
            "--checkpoint to use the shipped model"
        ) from None
    except OSError as exc:
        if path.is_symlink():
            raise CheckpointError(
                f"checkpoint {path} is a symbolic link; give the file's own path ({path.resolve()})"
            ) from None
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc.strerror})") from None
    handle = os.fdopen(fd, "rb")
    info = os.fstat(handle.fileno())
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "is not a plain file"
    elif info.st_size > MAX_CHECKPOINT_BYTES:
        problem = f"holds {info.st_size} bytes, more than any checkpoint ({MAX_CHECKPOINT_BYTES})"
    if problem is not None:
        handle.close()
        raise CheckpointError(f"checkpoint {path} {problem}; use a file written by `neuroauth train`")
    return handle


def _rebuild(payload: object, path: Path) -> NeuroAuthModel:
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a NeuroAuth checkpoint; use a file from `neuroauth train`")
    if not isinstance(payload.get("identity"), str):
        raise CheckpointError(
            f"checkpoint {path} carries no identity digest; it was altered or not written by "
            "`neuroauth train`. Restore the original file or retrain."
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version}; this NeuroAuth reads version "
            f"{FORMAT_VERSION}. Retrain it with this version (`neuroauth train`)."
        )
    try:
        config = json.loads(payload["config"])
        tensors: dict[str, torch.Tensor] = payload["tensors"]
        if not isinstance(tensors, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()
        ):
            raise TypeError("'tensors' must map names to tensors")
        if _digest(config, tensors) != payload["identity"]:  # before anything is built from the config
            raise CheckpointError(
                f"checkpoint {path} does not match its recorded identity {payload['identity']}: it was "
                "altered after it was written. Restore the original file or retrain."
            )
        montage = config["montage"]
        if not isinstance(montage, list) or not montage or not all(isinstance(m, str) and m for m in montage):
            raise ValueError(f"'montage' must be a list of channel names, got {montage!r:.200}")
        spec = SignalSpec.from_dict(config["signal"])
        denoiser = CausalDenoiser(DenoiserConfig.from_dict(config["denoiser"]))
        name = config["embedder"]["name"]
        if name not in EMBEDDERS:
            raise CheckpointError(
                f"checkpoint {path} holds embedder {name!r}, which this NeuroAuth does not know "
                f"(known: {', '.join(EMBEDDERS)}); upgrade NeuroAuth or retrain"
            )
        embedder_cls, config_cls = EMBEDDERS[name]
        embedder = embedder_cls(config_cls.from_dict(config["embedder"]["config"]))
        channels = getattr(embedder.config, "n_channels", len(montage))
        if channels != len(montage):
            raise ValueError(f"a montage of {len(montage)} channels for an embedder of {channels}")
        _load_part(denoiser, tensors, "denoiser.", path)
        _load_part(embedder, tensors, "embedder.", path)
        baseline = {k.removeprefix("baseline."): v for k, v in tensors.items() if k.startswith("baseline.")}
        cohort = None
        if config.get("cohort") is not None:
            parts = {k.removeprefix("cohort."): v for k, v in tensors.items() if k.startswith("cohort.")}
            cohort = Cohort.from_parts(parts, config["cohort"])
            if cohort.dim != embedder.dim:
                raise ValueError(f"cohort of dimension {cohort.dim} for an embedder of {embedder.dim}")
        calibration = None
        if config.get("calibration") is not None:
            parts = {
                k.removeprefix("calibration."): v for k, v in tensors.items() if k.startswith("calibration.")
            }
            calibration = ScoreSequences.from_parts(parts, config["calibration"])
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is incomplete or malformed ({exc.__class__.__name__}: {exc}); "
            "retrain it with `neuroauth train`"
        ) from None
    model = NeuroAuthModel(
        montage=tuple(montage),
        spec=spec,
        denoiser=denoiser,
        embedder=embedder,
        baseline=baseline,
        baseline_config=config.get("baseline", {}),
        meta=config.get("meta", {}),
        cohort=cohort,
        calibration=calibration,
    )
    stored = payload["identity"]
    if stored != model.identity():
        raise CheckpointError(
            f"checkpoint {path} does not match its recorded identity {stored}: it was altered "
            "after it was written. Restore the original file or retrain."
        )
    return model.eval()


def _load_part(module: nn.Module, tensors: dict, prefix: str, path: Path) -> None:
    part = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(part))
    unexpected = sorted(set(part) - set(expected))
    wrong = sorted(k for k in set(part) & set(expected) if part[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        details = "; ".join(
            f"{label}: {', '.join(prefix + k for k in keys[:5])}{' ...' if len(keys) > 5 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise CheckpointError(
            f"checkpoint {path} does not fit the models its configuration describes ({details}); "
            "it is damaged or was edited. Retrain it with `neuroauth train`."
        )
    module.load_state_dict(part, strict=True)
