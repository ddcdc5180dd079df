"""The public surface: exported names, the error hierarchy, the numcodecs codec."""

import numpy as np

import icqcodec
from icqcodec import errors


def test_exported_members():
    assert sorted(icqcodec.__all__) == sorted(
        [
            "__version__",
            "FORMAT_MAJOR",
            "FORMAT_MINOR",
            "encode",
            "decode",
            "IcqcodecError",
            "FormatError",
            "TruncatedError",
            "BadMagicError",
            "UnsupportedVersionError",
            "UnsupportedFeatureError",
            "ChecksumError",
            "LimitExceededError",
            "CorruptStreamError",
            "BackendUnavailableError",
        ]  # fmt: skip
    )
    for name in icqcodec.__all__:
        assert hasattr(icqcodec, name)


def test_error_hierarchy():
    assert issubclass(icqcodec.FormatError, ValueError)
    assert issubclass(icqcodec.BackendUnavailableError, ImportError)
    assert set(errors.ERROR_CLASSES) == {"truncated", "bad-magic", "unsupported-version", "unsupported-feature",
                                         "checksum", "limit", "corrupt"}  # fmt: skip
    for category, cls in errors.ERROR_CLASSES.items():
        error = cls("detail", section="4.1", offset=3)
        assert isinstance(error, icqcodec.FormatError) and error.category == category
        assert str(error) == f"{category}: detail at offset 3 (spec section 4.1)"


def test_numcodecs_codec_registered():
    import numcodecs

    codec = numcodecs.get_codec({"id": "icq", "bits": 3})
    x = np.random.default_rng(0).standard_normal((32, 128)).astype(np.float32)
    y = codec.decode(codec.encode(x))
    assert y.shape == x.shape and float(((y - x) ** 2).mean()) < 0.05
    assert codec.get_config() == {"id": "icq", "bits": 3, "outlier_ratio": 0.05, "quantizer": "uniform",
                                  "dtype": None}  # fmt: skip
