"""Int8 copies of a learned embedder, for the edge, and what they cost and lose.

- Linear layers (the ``spectral-metric`` MLP, the ResNet head): dynamic
  quantisation, int8 weights, activations quantised per batch at run time.
- The convolutional part (``conv_part``) of the ResNet (its backbone) and of
  the temporal network (its feature maps): static post-training quantisation (FX graph
  mode, the x86 backend), activation ranges calibrated on training windows.
  A fused embedder has its learned part quantised so; its spectral part,
  a single projection, stays in float.

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


def stored_bytes(module: nn.Module) -> int:
    """Size of the module's state dict as ``torch.save`` writes it."""
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def int8_copy(embedder: nn.Module, calibration: np.ndarray | None = None) -> nn.Module:
    """An int8 copy of ``embedder`` (the original is left as it is).

    ``calibration``: windows ``(B, C, L)`` of training subjects, needed for the
    activation ranges of convolutional parts.
    """
    from torch.ao.quantization import get_default_qconfig_mapping, quantize_dynamic
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    quantised = copy.deepcopy(embedder).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        owners = [m for m in quantised.modules() if hasattr(m, "conv_part")]  # ResNet, temporal network
        for owner in owners:
            if calibration is None or len(calibration) == 0:
                raise ValueError(
                    f"an int8 {owner.name} embedder needs calibration windows of the training subjects"
                )
            with torch.no_grad():
                inputs = owner.conv_input(torch.as_tensor(calibration))
            part = getattr(owner, owner.conv_part)
            prepared = prepare_fx(part, get_default_qconfig_mapping("x86"), (inputs[:1],))
            with torch.no_grad():
                for batch in inputs.split(64):
                    prepared(batch)
            setattr(owner, owner.conv_part, convert_fx(prepared))
        return quantize_dynamic(quantised, {nn.Linear}, dtype=torch.qint8)
