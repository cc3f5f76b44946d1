"""Errors raised by sonoedge.

Every failure the SDK can explain is an :class:`SDKError`. The message always says what was
wrong and how to fix it. Subclasses also derive from the closest built-in exception, so code
that already catches ``ValueError`` or ``RuntimeError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "InputError",
    "KernelError",
    "ModelError",
    "SDKError",
    "SourceError",
]


class SDKError(Exception):
    """Base class of every error raised by sonoedge."""


class InputError(SDKError, ValueError):
    """An argument or a frame given by the caller is invalid (wrong dtype, shape, range...)."""


class ModelError(SDKError):
    """A model or artifact is missing, corrupt, of an unsupported version or off-contract."""


class BackendUnavailableError(SDKError, ImportError):
    """A backend (TensorRT, CUDA, torch...) was asked for but cannot run on this machine."""


class KernelError(SDKError, RuntimeError):
    """A compiled kernel failed (CUDA error, kernels not built, resource limits)."""


class SourceError(SDKError, OSError):
    """A frame source (file, DICOM, video, camera, folder) cannot be opened or read."""
