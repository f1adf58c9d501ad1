"""The exporter's error hierarchy.

The library raises these; only the CLI turns them into exit codes and one-line messages.
Every message says what was expected, what arrived, and how to fix it.
"""

from __future__ import annotations


class ExporterError(Exception):
    """Base of every error the exporter raises on purpose (user input, environment, gate)."""

    exit_code = 2


class PlanError(ExporterError):
    """A setting, flag, plan file or target profile is invalid."""


class OutputExistsError(PlanError):
    """An output would overwrite an existing file and `force` was not given."""


class LoadError(ExporterError):
    """The model file could not be read or is not a supported format."""


class ExportError(ExporterError):
    """The model could not be traced to ONNX, or the ONNX file disagrees with PyTorch."""


class CalibrationError(ExporterError):
    """Calibration or validation data is missing, unreadable, or does not fit the model."""


class CompressionError(ExporterError):
    """A compression pass could not be applied."""


class QuantizationError(ExporterError):
    """onnxruntime could not quantize or convert the model."""


class ValidationFailed(ExporterError):
    """The exported model missed one of the target's thresholds (outputs are still written)."""

    exit_code = 1


class DiskFullError(ExporterError):
    """The disk (or TMPDIR) filled up while the run wrote its files."""


class OutputBusyError(PlanError):
    """Another live exporter run is writing the same output folder."""


def raise_if_disk_full(exc: BaseException) -> None:
    """Raise one `DiskFullError` if `exc` (or anything it was raised from) is an out-of-space error."""
    import errno

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
        if full or "No space left on device" in str(exc):
            where = getattr(exc, "filename", None)
            raise DiskFullError(
                "no space left on the device" + (f" while writing {where}" if where else "")
                + ": free some space, or point --out (and TMPDIR, where work files go) at a disk with room"
            ) from None
        exc = exc.__cause__ or exc.__context__


class UserCodeError(ExporterError):
    """The user's own code (model class, forward, dataset, factory) raised: bad input, named in one line."""


def raise_if_user_code(exc: BaseException) -> None:
    """Raise one `UserCodeError` if `exc` was raised in the user's code rather than in the exporter or a library.

    The user's code is any frame of the traceback whose file lies outside the exporter's packages, the
    standard library and installed packages (a model's `forward`, a dataset's `__getitem__`...).
    """
    if isinstance(exc, ExporterError) or not isinstance(exc, Exception):
        return
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _is_user_file(f.filename)]
    if frames:
        frame = frames[-1]
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        raise UserCodeError(
            f"your code raised {type(exc).__name__} in {frame.name}() at {frame.filename}:{frame.lineno}: "
            f"{lines[0][:300] if lines else ''}; fix it and rerun (-v shows the traceback)"
        ) from exc


def _is_user_file(filename: str) -> bool:
    import os
    import sysconfig

    if not filename or filename.startswith("<"):  # generated code (torch.fx graphs, eval)
        return False
    path = os.path.realpath(filename)
    here = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    ours = [os.path.join(here, name) for name in ("exporter", "calibration", "targets")]
    libraries = {os.path.realpath(p) for key in ("stdlib", "platstdlib", "purelib", "platlib")
                 if (p := sysconfig.get_paths().get(key))}
    return not any(path.startswith(root + os.sep) for root in [*ours, *libraries])
