"""Int8 copies of a learned embedder, for the edge, and what they cost and lose.

- Linear layers (the ``spectral-metric`` MLP, the ResNet head): dynamic
  quantisation, int8 weights, activations quantised per batch at run time.
- The ResNet backbone: static post-training quantisation (FX graph mode, the
  x86 backend), its activation ranges calibrated on training windows.

PyTorch marks ``torch.ao.quantization`` deprecated in favour of the separate
torchao package; it still works in the torch this project pins, and its
warnings are silenced here rather than adding a dependency.
"""

from __future__ import annotations

import copy
import io
import warnings

import numpy as np
import torch
from torch import nn

from ..models.embedders.resnet import COLUMNS, ROWS, ResNetEmbedder


def stored_bytes(module: nn.Module) -> int:
    """Size of the module's state dict as ``torch.save`` writes it."""
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def _planes(embedder: ResNetEmbedder, windows: np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(windows, dtype=torch.float32) / embedder.input_scale[:, None]
    return x.reshape(len(x), embedder.config.n_channels, ROWS, COLUMNS)


def int8_copy(embedder: nn.Module, calibration: np.ndarray | None = None) -> nn.Module:
    """An int8 copy of ``embedder`` (the original is left as it is).

    ``calibration``: windows ``(B, C, L)`` of training subjects, needed for a
    ResNet backbone's activation ranges.
    """
    from torch.ao.quantization import get_default_qconfig_mapping, quantize_dynamic
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    quantised = copy.deepcopy(embedder).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(quantised, ResNetEmbedder):
            if calibration is None or len(calibration) == 0:
                raise ValueError("an int8 ResNet needs calibration windows of the training subjects")
            planes = _planes(quantised, calibration)
            prepared = prepare_fx(quantised.backbone, get_default_qconfig_mapping("x86"), (planes[:1],))
            with torch.no_grad():
                for batch in planes.split(64):
                    prepared(batch)
            quantised.backbone = convert_fx(prepared)
        return quantize_dynamic(quantised, {nn.Linear}, dtype=torch.qint8)
