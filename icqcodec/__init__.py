"""icqcodec: the reference implementation of the ICQ format for low-bit LLM weights."""

from ._version import __version__
from .constants import FORMAT_MAJOR, FORMAT_MINOR
from .decode import decode
from .encode import encode
from .errors import (
    BackendUnavailableError,
    BadMagicError,
    ChecksumError,
    CorruptStreamError,
    FormatError,
    IcqcodecError,
    InputError,
    LimitExceededError,
    TruncatedError,
    UnsupportedFeatureError,
    UnsupportedVersionError,
)
from .files import load, load_file, safe_open, save, save_file

__all__ = [
    "__version__",
    "FORMAT_MAJOR",
    "FORMAT_MINOR",
    "encode",
    "decode",
    "save",
    "load",
    "save_file",
    "load_file",
    "safe_open",
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
]
