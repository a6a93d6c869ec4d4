"""Owner templates and their file format (biometric data: plain numbers, verified on load).

A template file is one JSON document, never pickle, and nothing in it is executed::

    {"format": "neuroauth-template", "format_version": 4,
     "sha256": "<hex digest of the UTF-8 bytes of content>",
     "hmac_sha256": "<hex HMAC-SHA256 of the same bytes under the installation key>",
     "content": "<a JSON text: metadata, parameters, calibration record, and arrays>"}

Arrays inside ``content`` are ``{"dtype": "<f8", "shape": [...], "base64": "..."}``:
little-endian float64 bytes in base64. Loading checks, in order: the document
parses (else damaged or truncated), the format name and version, the digest of
``content`` (else altered after writing), its HMAC under the installation key
(:mod:`neuroauth.enroll.template_key`; else written elsewhere, or forged by someone
who could write the file but not read the key), then every field's presence, type, and
the arrays' dtype, shapes (centroids ``(K, dim)``, one per enrolled state,
support vectors ``(S, dim)``, dual coefficients ``(S,)``, the enrollment windows
``(n_k, dim)`` of each state) and finiteness. Every refusal is a :class:`TemplateError`
naming the file and the fix.

The enrollment windows are kept so that the template's owner can serve as one of the
site's people other templates are normalised against (:mod:`neuroauth.enroll.site`),
and so that the template can be fitted again when the site grows. A template without
them (one written before they were kept) is version 3 and still read: it serves its owner
alone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import numpy as np

from ..errors import TemplateError
from .decision import DecisionParams
from .ocsvm import OneClassSvm
from .scoring import FusionStats, WindowScores, score_windows
from .template_key import sign, verify

FORMAT = "neuroauth-template"
FORMAT_VERSION = 4  # 2: one centroid per enrolled state; 3: signed with the installation key;
# 4: with the enrollment windows
READ_VERSIONS = (3, 4)
POLICIES = ("target-far", "eer", "youden")

_MAX_PARAMETER = 1e4  # no calibrated parameter comes near: scores are in units of a cohort's spread
_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DTYPE = "<f8"


def validate_user(user: str) -> str:
    """Return ``user`` if it is a valid owner name: 1-64 of ``[A-Za-z0-9_.-]``, the first a letter or
    digit. The one rule for owner names: enrollment, the template store and the daemon's configuration
    all apply it, so no one can be enrolled whom the configuration then refuses."""
    if not isinstance(user, str) or not _USER.fullmatch(user):
        raise TemplateError(
            f"user name {_shown(user)} is not allowed: use 1 to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit (for example `alice` or `bob.smith`)"
        )
    return user


def _shown(value: object) -> str:
    """``value`` quoted for a message, its first 80 characters when it is longer."""
    text = repr(value)
    return text if len(text) <= 82 else f"{text[:80]}... ({len(str(value))} characters)"


def utc_now() -> str:
    """The current time as ISO 8601 in UTC, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Threshold:
    """The window-level accept threshold on the fused score and what it gives on the calibration data."""

    policy: str  # one of POLICIES
    value: float  # accept a window when fused >= value
    target_far: float | None  # the false-accept target (policy "target-far"), else None
    far: float  # measured on the cohort's windows
    frr: float  # measured on the owner's held-out windows

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"threshold policy {self.policy!r} is not one of {', '.join(POLICIES)}")
        if not np.isfinite(self.value) or not (0 <= self.far <= 1 and 0 <= self.frr <= 1):
            raise ValueError(f"threshold figures out of range: {self}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Threshold:
        target = data["target_far"]
        return cls(
            policy=str(data["policy"]),
            value=float(data["value"]),
            target_far=None if target is None else float(target),
            far=float(data["far"]),
            frr=float(data["frr"]),
        )


@dataclass(frozen=True, eq=False)
class Template:
    """Everything needed to score one owner's windows and decide over time."""

    user: str
    checkpoint_identity: str
    embedder: str
    dim: int
    states: tuple[str, ...]  # the states the owner was enrolled in, e.g. ("eyes-open", "eyes-closed")
    centroids: np.ndarray  # (len(states), dim) float64, unit rows: the mean of each state's windows
    svm: OneClassSvm
    fusion: FusionStats
    threshold: Threshold
    decision: DecisionParams
    created: str  # ISO 8601, UTC
    n_windows: int  # owner windows it was enrolled from
    calibration: dict = field(default_factory=dict)  # JSON-ready record of how it was calibrated
    # the live stream enrolled from, {"source_id", "host", "channels"}; None when from recordings
    stream: dict | None = None
    # per state, the enrollment windows (n_k, dim) float64 unit rows it was fitted on; None in a
    # template written before they were kept
    windows: tuple[np.ndarray, ...] | None = None

    def __post_init__(self) -> None:
        validate_user(self.user)
        if self.dim < 1 or self.centroids.shape != (len(self.states), self.dim) or self.svm.dim != self.dim:
            raise ValueError(
                f"template dimension {self.dim} and states {self.states} disagree with its centroids "
                f"{self.centroids.shape} or support vectors {self.svm.support_vectors.shape}"
            )
        if not self.states or len(set(self.states)) != len(self.states) or not all(self.states):
            raise ValueError(f"template states must be distinct non-empty names, got {self.states}")
        for name, array in (
            ("centroids", self.centroids),
            ("support vectors", self.svm.support_vectors),
            ("dual coefficients", self.svm.dual_coef),
        ):
            if array.dtype != np.float64 or not np.isfinite(array).all():
                raise ValueError(f"template {name} must be finite float64 ({array.dtype})")
        # what enrollment makes is bounded: unit vectors, dual coefficients within [0, 1]; a template
        # of finite but extreme values would turn scores and evidence into overflow and NaN
        norms = np.linalg.norm(self.centroids, axis=1)
        if not np.allclose(norms, 1.0, atol=1e-3):
            raise ValueError(f"template centroids must be unit vectors (norms {norms.round(4).tolist()})")
        if np.abs(self.svm.support_vectors).max() > 1.001 or np.abs(self.svm.dual_coef).max() > 1.0:
            raise ValueError(
                "template support vectors must be unit vectors and dual coefficients within [0, 1]"
            )
        bounded = {
            "svm intercept": self.svm.intercept,
            "svm gamma": self.svm.gamma,
            **{f"fusion {k}": v for k, v in self.fusion.to_dict().items()},
            "threshold": self.threshold.value,
            **{f"decision {k}": v for k, v in self.decision.to_dict().items()},
        }
        wild = {k: v for k, v in bounded.items() if not abs(v) <= _MAX_PARAMETER}
        if wild:
            raise ValueError(f"template parameters out of range (beyond {_MAX_PARAMETER:g}): {wild}")
        if self.stream is not None:
            _check_stream(self.stream)
        if self.windows is not None:
            _check_windows(self.windows, self.states, self.dim)
        if self.n_windows < 1 or not self.checkpoint_identity or not self.embedder:
            raise ValueError("template needs its window count, checkpoint identity and embedder name")

    def score(self, x: np.ndarray) -> WindowScores:
        """Scores of the embedding windows ``x (n, D)``; see :mod:`neuroauth.enroll.scoring`."""
        return score_windows(self, x)

    def stream_mismatch(self, seen: dict) -> str | None:
        """Why the stream ``seen`` (source_id, host, channels) is not the one this owner was enrolled
        from; None when it is, or when the template records none (enrolled from recordings)."""
        if self.stream is None:
            return None
        differ = [
            f"{key} {seen.get(key)!r} (enrolled from {self.stream[key]!r})"
            for key in ("source_id", "host", "channels")
            if seen.get(key) != self.stream[key]
        ]
        if not differ:
            return None
        return (
            f"not the stream {self.user} was enrolled from: {'; '.join(differ)}. Another program may be "
            "imitating the headset; if the headset itself changed, enroll again "
            f"(`neuroauth enroll --user {self.user}`)"
        )

    def summary(self) -> dict:
        """Metadata and calibration figures, without any biometric array."""
        return {
            "user": self.user,
            "created": self.created,
            "checkpoint_identity": self.checkpoint_identity,
            "embedder": self.embedder,
            "dim": self.dim,
            "states": list(self.states),
            "n_windows": self.n_windows,
            "svm": {"nu": self.svm.nu, "gamma": self.svm.gamma, "support_vectors": len(self.svm.dual_coef)},
            "fusion": self.fusion.to_dict(),
            "threshold": self.threshold.to_dict(),
            "decision": self.decision.to_dict(),
            "calibration": self.calibration,
            "stream": self.stream,
        }

    # -- file format

    def to_bytes(self, key: bytes) -> bytes:
        """The template file's bytes, signed with the installation ``key``."""
        content = {
            "user": self.user,
            "checkpoint_identity": self.checkpoint_identity,
            "embedder": self.embedder,
            "dim": self.dim,
            "states": list(self.states),
            "created": self.created,
            "n_windows": self.n_windows,
            "svm": {"intercept": self.svm.intercept, "gamma": self.svm.gamma, "nu": self.svm.nu},
            "fusion": self.fusion.to_dict(),
            "threshold": self.threshold.to_dict(),
            "decision": self.decision.to_dict(),
            "calibration": self.calibration,
            "stream": self.stream,
            "arrays": {
                "centroids": _encode_array(self.centroids),
                "support_vectors": _encode_array(self.svm.support_vectors),
                "dual_coef": _encode_array(self.svm.dual_coef),
                **({"windows": [_encode_array(w) for w in self.windows]} if self.windows is not None else {}),
            },
        }
        try:
            text = json.dumps(content, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TemplateError(
                f"the template of {self.user!r} cannot be written: its calibration record is not plain "
                f"JSON ({exc})"
            ) from None
        document = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION if self.windows is not None else 3,
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
            "hmac_sha256": sign(key, text),
            "content": text,
        }
        return (json.dumps(document) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, source: str, key: bytes, user: str | None = None) -> Template:
        """Read a template file's bytes and check them against the installation ``key``; ``source``
        (the file) is named in every error.

        ``user``, when known, makes the suggested fix name the right ``--user``.
        """
        fix = f"`neuroauth enroll --user {user or 'NAME'}`"
        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise TemplateError(
                f"template {source} is damaged or truncated (not a complete template document); "
                f"remove it and enroll again ({fix})"
            ) from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise TemplateError(f"{source} is not a NeuroAuth template; remove it or enroll again ({fix})")
        version = document.get("format_version")
        if version not in READ_VERSIONS:
            raise TemplateError(
                f"template {source} has format version {version!r}; this NeuroAuth reads versions "
                f"{' and '.join(map(str, READ_VERSIONS))}. Enroll again with this version ({fix})."
            )
        text, digest = document.get("content"), document.get("sha256")
        if not isinstance(text, str) or not isinstance(digest, str):
            raise TemplateError(
                f"template {source} is damaged (no content or digest); remove it and enroll again ({fix})"
            )
        if hashlib.sha256(text.encode()).hexdigest() != digest:
            raise TemplateError(
                f"template {source} does not match its SHA-256 digest: it was altered after it was "
                "written. Restore it from a backup, or remove it and enroll again "
                f"({fix})."
            )
        signature = document.get("hmac_sha256")
        if not isinstance(signature, str) or not verify(key, text, signature):
            raise TemplateError(
                f"template {source} is not signed with this installation's key: it was enrolled on "
                "another installation, or written by someone who could not read the key. Enroll again "
                f"here ({fix})."
            )
        try:
            template = cls._from_content(json.loads(text))
            if (template.windows is not None) != (version == FORMAT_VERSION):
                held = "without" if version == FORMAT_VERSION else "with"
                raise ValueError(f"a version {version} template {held} enrollment windows")
            return template
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError, TemplateError) as exc:
            raise TemplateError(
                f"template {source} is malformed ({exc.__class__.__name__}: {exc}); remove it and enroll "
                f"again ({fix})"
            ) from None

    @classmethod
    def _from_content(cls, content: dict) -> Template:
        arrays = content["arrays"]
        dim = content["dim"]
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"'dim' must be a positive integer, got {dim!r}")
        states = content["states"]
        if not isinstance(states, list) or not all(isinstance(s, str) for s in states):
            raise TypeError(f"'states' must be a list of names, got {states!r}")
        centroids = _decode_array(arrays["centroids"], "centroids", ndim=2)
        support = _decode_array(arrays["support_vectors"], "support_vectors", ndim=2)
        coef = _decode_array(arrays["dual_coef"], "dual_coef", ndim=1)
        if (
            centroids.shape != (len(states), dim)
            or support.shape[1:] != (dim,)
            or coef.shape != support.shape[:1]
        ):
            raise ValueError(
                f"array shapes disagree with dim {dim} and {len(states)} state(s): centroids "
                f"{centroids.shape}, support_vectors {support.shape}, dual_coef {coef.shape}"
            )
        windows = arrays.get("windows")
        if windows is not None:
            if not isinstance(windows, list):
                raise TypeError("'windows' must be a list of arrays, one per state")
            windows = tuple(_decode_array(w, f"windows[{i}]", ndim=2) for i, w in enumerate(windows))
        svm = content["svm"]
        calibration = content["calibration"]
        if not isinstance(calibration, dict):
            raise TypeError("'calibration' must be an object")
        return cls(
            user=str(content["user"]),
            checkpoint_identity=str(content["checkpoint_identity"]),
            embedder=str(content["embedder"]),
            dim=dim,
            states=tuple(states),
            centroids=centroids,
            svm=OneClassSvm(
                support_vectors=support,
                dual_coef=coef,
                intercept=float(svm["intercept"]),
                gamma=float(svm["gamma"]),
                nu=float(svm["nu"]),
            ),
            fusion=FusionStats(**{k: float(v) for k, v in content["fusion"].items()}),
            threshold=Threshold.from_dict(content["threshold"]),
            decision=DecisionParams.from_dict(content["decision"]),
            created=str(content["created"]),
            n_windows=int(content["n_windows"]),
            calibration=calibration,
            stream=content.get("stream"),
            windows=windows,
        )


def _check_stream(stream: dict) -> None:
    """A recorded stream identity: exactly source_id and host (strings) and channels (labels)."""
    if not isinstance(stream, dict) or set(stream) != {"source_id", "host", "channels"}:
        raise ValueError(f"template stream must hold source_id, host and channels, got {stream!r:.200}")
    channels = stream["channels"]
    if (
        not isinstance(stream["source_id"], str)
        or not isinstance(stream["host"], str)
        or max(len(stream["source_id"]), len(stream["host"])) > 1024
        or not isinstance(channels, list)
        or not 1 <= len(channels) <= 512
        or not all(isinstance(c, str) and 0 < len(c) <= 256 for c in channels)
    ):
        raise ValueError(f"template stream is malformed: {stream!r:.200}")


def _check_windows(windows: tuple[np.ndarray, ...], states: tuple[str, ...], dim: int) -> None:
    """Enrollment windows: one finite float64 array ``(n_k, dim)`` of unit rows per state."""
    if len(windows) != len(states):
        raise ValueError(f"template holds enrollment windows of {len(windows)} state(s), not {len(states)}")
    for state, w in zip(states, windows, strict=True):
        if w.dtype != np.float64 or w.ndim != 2 or w.shape[1] != dim or len(w) == 0:
            raise ValueError(f"enrollment windows of {state!r} must be (n, {dim}) float64, got {w.shape}")
        norms = np.linalg.norm(w, axis=1)
        if not np.isfinite(w).all() or not np.allclose(norms, 1.0, atol=1e-3):
            raise ValueError(f"enrollment windows of {state!r} must be finite unit vectors")


def _encode_array(array: np.ndarray) -> dict:
    array = np.ascontiguousarray(array, dtype=_DTYPE)
    return {"dtype": _DTYPE, "shape": list(array.shape), "base64": base64.b64encode(array.tobytes()).decode()}


def _decode_array(spec: dict, name: str, ndim: int) -> np.ndarray:
    if spec["dtype"] != _DTYPE:
        raise ValueError(f"array {name!r} has dtype {spec['dtype']!r}, expected {_DTYPE!r}")
    shape = spec["shape"]
    if (
        not isinstance(shape, list)
        or len(shape) != ndim
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)
    ):
        raise ValueError(f"array {name!r} has shape {shape!r}, expected {ndim} positive sizes")
    try:
        raw = base64.b64decode(spec["base64"], validate=True)
    except binascii.Error as exc:
        raise ValueError(f"array {name!r} is not valid base64 ({exc})") from None
    if len(raw) != int(np.prod(shape)) * 8:
        raise ValueError(
            f"array {name!r} holds {len(raw)} bytes, shape {shape} needs {int(np.prod(shape)) * 8}"
        )
    array = np.frombuffer(raw, dtype=_DTYPE).reshape(shape).astype(np.float64)  # native, writable copy
    if not np.isfinite(array).all():
        raise ValueError(f"array {name!r} holds non-finite values")
    return array
