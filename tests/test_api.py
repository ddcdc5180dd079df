"""The public surface: exported names, the error hierarchy, the numcodecs codec."""

import numpy as np
import pytest

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
        ]  # fmt: skip
    )
    for name in icqcodec.__all__:
        assert hasattr(icqcodec, name)


def test_error_hierarchy():
    assert issubclass(icqcodec.FormatError, ValueError)
    assert issubclass(icqcodec.InputError, icqcodec.IcqcodecError) and issubclass(icqcodec.InputError, ValueError)
    from icqcodec import checkpoints

    assert checkpoints.InputError is icqcodec.InputError  # the old name stays importable
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


def test_top_level_file_functions_are_the_files_module_ones():
    from icqcodec import files

    for name in ("save", "load", "save_file", "load_file", "safe_open"):
        assert getattr(icqcodec, name) is getattr(files, name), name


def test_deprecated_device_arguments_warn_and_pick_the_gpu_backend(tmp_path):
    path = tmp_path / "m.icq"
    icqcodec.save_file({"w": np.ones((4, 64), np.float32)}, path)
    for kwargs in ({"device": "cpu"}, {"framework": "numpy"}, {"framework": "np"}):
        with pytest.warns(DeprecationWarning, match=f"{next(iter(kwargs))}= is deprecated"):
            with icqcodec.safe_open(path, **kwargs) as f:
                assert f.backend == "numba" and f.device == "cpu"
    with pytest.warns(DeprecationWarning, match="device= is deprecated"):
        with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 'tpu'"):
            icqcodec.load_file(path, device="tpu")
    with pytest.raises(ValueError, match=r"backend must be one of \('numba', 'reference', 'cupy'\), got 'gpu'"):
        icqcodec.safe_open(path, backend="gpu")


def test_safe_open_bounds_what_it_decodes(tmp_path):
    path = tmp_path / "m.icq"
    icqcodec.save_file({"w": np.ones((64, 128), np.float32), "b": np.zeros(10, np.int64)}, path)
    with icqcodec.safe_open(path, max_output_size=16 * 128 * 4) as f:
        assert f.get_slice("w")[0:16].shape == (16, 128)
        with pytest.raises(ValueError, match="decoded size 8704 bytes is above max_output_size=8192"):
            f.get_slice("w")[0:17]
        with pytest.raises(ValueError, match="decoded size 32768 bytes is above max_output_size=8192"):
            f.get_tensor("w")
        assert f.get_tensor("b").shape == (10,)
    with pytest.raises(ValueError, match="decoded size 32848 bytes is above max_output_size=32768"):
        icqcodec.load_file(path, max_output_size=32768)
