"""bf16 only where it gives the right numbers.

Some PyTorch builds compute wrong bf16 convolutions on some CPUs (torch 2.13's oneDNN path on CPUs
with AVX512-BF16: ``conv1d`` with 4 or 8 input channels and kernels of 8 or 16 samples is off by
about 100 %). Before any bf16 computation, :func:`bf16_is_reliable` runs the encoder's kinds of
operations (1-D convolutions over the tokenizer's channel counts, kernels and strides, in the
channels-first layout of training and the channels-last layout of inference, and a matrix product)
in bf16 and in fp32 on the device, once per process and device; when they disagree, the project
computes in fp32 instead, with a warning, so it never returns silently wrong numbers.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

#: Largest relative error (norm of the difference over the norm of the fp32 result) a bf16 probe
#: may show; bf16 keeps 8 bits of mantissa, so a correct kernel stays near 1e-2.
TOLERANCE = 0.05
_CHANNELS, _KERNELS, _STRIDES = (1, 4, 8, 16, 32, 64), (1, 2, 4, 5, 8, 16), (1, 2, 4, 5, 8)
_RELIABLE: dict[str, bool] = {}


def _relative_error(fast: torch.Tensor, exact: torch.Tensor) -> float:
    return float((fast.float() - exact).norm() / exact.norm().clamp(min=1e-12))


def probe_errors(device: str | torch.device = "cpu") -> dict[str, float]:
    """Relative error of each bf16 probe on ``device`` against fp32 (``{probe name: error}``)."""
    device = torch.device(device)
    g = torch.Generator().manual_seed(0)
    errors = {}
    for cin, k, s in itertools.product(_CHANNELS, _KERNELS, _STRIDES):
        if s > k:
            continue
        x = torch.randn(4, cin, 80, generator=g).to(device)
        w = torch.randn(8, cin, k, generator=g).to(device)
        pad = (k - s) // 2
        exact = F.conv1d(x, w, stride=s, padding=pad)
        fast = F.conv1d(x.bfloat16(), w.bfloat16(), stride=s, padding=pad)
        errors[f"conv1d(in={cin}, kernel={k}, stride={s})"] = _relative_error(fast, exact)
        x, w = (t.unsqueeze(2).bfloat16().contiguous(memory_format=torch.channels_last)
                for t in (x, w))
        fast = F.conv2d(x, w, stride=(1, s), padding=(0, pad)).squeeze(2)
        errors[f"conv1d channels-last(in={cin}, kernel={k}, stride={s})"] = \
            _relative_error(fast, exact)
    a = torch.randn(64, 96, generator=g).to(device)
    b = torch.randn(96, 48, generator=g).to(device)
    errors["matmul"] = _relative_error(a.bfloat16() @ b.bfloat16(), a @ b)
    return errors


def bf16_is_reliable(device: str | torch.device = "cpu") -> bool:
    """Whether bf16 gives the right numbers on ``device`` (probed once per process and device).

    When it does not, a :class:`RuntimeWarning` names the worst probe and its error.
    """
    key = str(torch.device(device))
    if key not in _RELIABLE:
        errors = probe_errors(device)
        worst = max(errors, key=errors.get)
        _RELIABLE[key] = errors[worst] <= TOLERANCE
        logger.info("bf16 probes on %s: worst %s, relative error %.3g", key, worst, errors[worst])
        if not _RELIABLE[key]:
            warnings.warn(f"bf16 computes wrong results on this {key} device ({worst}: relative "
                          f"error {errors[worst]:.0%} against fp32); computing in fp32 instead.",
                          RuntimeWarning, stacklevel=2)
    return _RELIABLE[key]


@contextlib.contextmanager
def bf16_autocast(device: str | torch.device) -> Iterator[bool]:
    """``torch.autocast`` to bf16 on ``device`` if bf16 is reliable there, else fp32; yields
    whether bf16 is used."""
    device = torch.device(device)
    if bf16_is_reliable(device):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield True
    else:
        yield False


def inference_autocast(device: str | torch.device):
    """What encoders run under at inference (``sleepfm embed`` and ``predict``): bf16 autocast on
    CUDA (:func:`bf16_autocast`), full precision elsewhere."""
    device = torch.device(device)
    return bf16_autocast(device) if device.type == "cuda" else contextlib.nullcontext()


def checked_precision(precision: str, device: str | torch.device) -> str:
    """A Lightning ``precision`` setting, with bf16 replaced by ``32-true`` where bf16 is not
    reliable on ``device``."""
    if "bf16" in str(precision) and not bf16_is_reliable(device):
        return "32-true"
    return precision
