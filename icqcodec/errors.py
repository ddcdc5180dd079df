"""Errors raised by icqcodec (spec section 9.1).

::

    IcqcodecError
     +-- FormatError (ValueError)            malformed input; .category names the spec category
     |    +-- TruncatedError                 "truncated"
     |    +-- BadMagicError                  "bad-magic"
     |    +-- UnsupportedVersionError        "unsupported-version"
     |    +-- UnsupportedFeatureError        "unsupported-feature"
     |    +-- ChecksumError                  "checksum"
     |    +-- LimitExceededError             "limit"
     |    +-- CorruptStreamError             "corrupt"
     +-- InputError (ValueError)             a model file the converter cannot read
     +-- BackendUnavailableError (ImportError)

Misuse of the API (wrong argument types or values) raises the builtin TypeError or ValueError.
"""

from __future__ import annotations

__all__ = [
    "IcqcodecError",
    "FormatError",
    "TruncatedError",
    "BadMagicError",
    "UnsupportedVersionError",
    "UnsupportedFeatureError",
    "ChecksumError",
    "LimitExceededError",
    "CorruptStreamError",
    "InputError",
    "BackendUnavailableError",
    "ERROR_CLASSES",
]


class IcqcodecError(Exception):
    """Root of every error this package raises on purpose.

    .. versionadded:: 0.1.0
    """


class FormatError(IcqcodecError, ValueError):
    """The input is not a valid ICQ 1.x file.

    Attributes: ``category`` (spec section 9.1), ``section`` (the spec section of the broken
    rule), ``offset`` (file offset of the offending structure, or None) and ``detail``.

    .. versionadded:: 0.1.0
    """

    category = "corrupt"

    def __init__(self, detail: str, *, section: str, offset: int | None = None) -> None:
        self.detail = detail
        self.section = section
        self.offset = offset
        where = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"{self.category}: {detail}{where} (spec section {section})")


class TruncatedError(FormatError):
    """The input ends before a structure it declares."""

    category = "truncated"


class BadMagicError(FormatError):
    """The first bytes are not the ICQ magic."""

    category = "bad-magic"


class UnsupportedVersionError(FormatError):
    """The major version is not 1."""

    category = "unsupported-version"


class UnsupportedFeatureError(FormatError):
    """A required feature, coding method or data type that this decoder does not know."""

    category = "unsupported-feature"


class ChecksumError(FormatError):
    """A CRC-32C does not match."""

    category = "checksum"


class LimitExceededError(FormatError):
    """A value exceeds a normative limit (spec section 4.5)."""

    category = "limit"


class CorruptStreamError(FormatError):
    """Any other broken rule: reserved bits, order, sizes, values, gap chains, trailing bytes."""

    category = "corrupt"


class InputError(IcqcodecError, ValueError):
    """A model file the converter cannot read: an unknown extension, a malformed safetensors file,
    .npz or .npy, or a sharded checkpoint's index. Not an ICQ file (those raise FormatError).

    .. versionadded:: 0.2.0 (before: ``icqcodec.checkpoints.InputError``, still importable there)
    """


class BackendUnavailableError(IcqcodecError, ImportError):
    """A decoding backend's optional dependency (CuPy, a GPU) is missing.

    .. versionadded:: 0.1.0
    """


ERROR_CLASSES: dict[str, type[FormatError]] = {
    cls.category: cls
    for cls in (
        TruncatedError,
        BadMagicError,
        UnsupportedVersionError,
        UnsupportedFeatureError,
        ChecksumError,
        LimitExceededError,
        CorruptStreamError,
    )
}
