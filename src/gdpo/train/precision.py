"""``model.dtype`` -> the dtype forward passes compute in (weights stay fp32 for AdamW).

* ``float32``: everything in fp32, everywhere.
* ``bfloat16``: bf16 autocast on CUDA (GPUs with native bf16, compute capability >= 8.0)
  and on CPU. A GPU without native bf16 is an error at start rather than a silent, slow
  emulation.
* ``auto``: bf16 autocast on a CUDA GPU with native bf16; fp32 everywhere else, that is on
  CPU and on fp16-only GPUs (V100, T4, ...). fp16 is never chosen: without a loss scaler its
  gradients underflow.

Generation, old / reference logprobs and the update all run under the same autocast, so the
sampled distribution and the logprobs describe the same numerics.
"""

from __future__ import annotations

import torch

from gdpo.train.config_io import ConfigError


def native_bf16(device: torch.device) -> bool:
    """True where bf16 matmuls run natively: CPUs (via autocast), CUDA compute capability >= 8.0."""
    if device.type != "cuda":
        return device.type == "cpu"
    if torch.version.hip:  # ROCm: torch knows which GPUs do bf16
        return torch.cuda.is_bf16_supported()
    return torch.cuda.get_device_capability(device)[0] >= 8


def compute_dtype(setting: str, device: torch.device) -> torch.dtype:
    """The autocast dtype for ``model.dtype = setting`` on ``device`` (float32 = no autocast)."""
    if setting == "float32":
        return torch.float32
    if setting == "auto":
        return torch.bfloat16 if device.type == "cuda" and native_bf16(device) else torch.float32
    if setting == "bfloat16":
        if not native_bf16(device):
            raise ConfigError(f"model.dtype = 'bfloat16' but {_device_name(device)} has no native bf16 "
                              "(CUDA compute capability < 8.0); set model.dtype=auto or float32 (fp32 on this GPU)")
        return torch.bfloat16
    raise ConfigError(f"model.dtype = {setting!r} is not one of 'auto', 'float32', 'bfloat16'")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
