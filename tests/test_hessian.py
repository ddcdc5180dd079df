"""Hessian-guided rounding: the statistic's checks and damping, the factor, the output error it
buys, and codes that do not depend on the machine's threads."""

import subprocess
import sys

import numpy as np
import pytest
from checks import check_backends_agree

from icqcodec import files, hessian
from icqcodec.encode import ENCODER_METADATA, EncodeOptions, assemble, encode_icq, encode_tensor
from icqcodec.fitting import CLIP_STARTS, REFITS, encode_rows
from icqcodec.hessian import prepare, rounded_codes


def correlated_inputs(rng, cols: int, tokens: int = 4096) -> np.ndarray:
    scales = np.exp(rng.standard_normal(cols))
    mix = rng.standard_normal((cols, cols)) * 0.1 + np.eye(cols)
    return (rng.standard_normal((tokens, cols)) * scales) @ mix


def encoded(w: np.ndarray, options: EncodeOptions, statistic=None) -> bytes:
    pieces = assemble([encode_tensor("w", w, options, coding="icq", dtype="float32", statistic=statistic)],
                      dict(ENCODER_METADATA))  # fmt: skip
    return b"".join(pieces)


def output_error(w: np.ndarray, q: np.ndarray, h: np.ndarray) -> float:
    d = w.astype(np.float64) - q
    return float(np.einsum("ij,jk,ik->", d, h, d) / np.einsum("ij,jk,ik->", w, h, w))


@pytest.mark.parametrize("statistic, message", [
    (np.ones(63), r"calibration statistic of shape \(63,\), expected \(64,\) or \(64, 64\) for its 64 columns"),
    (np.full(64, np.nan), "holds values that are not finite"),
    (-np.ones(64), "negative second moments"),
    (np.zeros((64, 64)), r"is all zero \(no calibration input reached it\)"),
])  # fmt: skip
def test_bad_statistics_are_refused_naming_the_tensor(statistic, message):
    w = np.ones((4, 64), np.float32)
    with pytest.raises(ValueError, match=f"^tensor 'layer.w': .*{message}"):
        encode_tensor("layer.w", w, EncodeOptions(), coding="icq", statistic=statistic)


def test_an_indefinite_statistic_is_damped_with_a_warning_or_refused():
    h = np.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3 and -1
    with pytest.warns(RuntimeWarning, match="singular at damping 0.01; trying 0.1") as caught:
        prepared = prepare(h, 2, name="t")
    assert [str(w.message).rsplit(" ", 1)[-1] for w in caught] == ["0.1", "1", "10"]
    assert prepared.damping == pytest.approx(10.0)
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="stays singular at damping 10"):
        prepare(np.array([[1.0, 30.0], [30.0, 1.0]]), 2, name="t")


def test_feedback_and_pivots_factor_the_damped_statistic(rng):
    x = correlated_inputs(rng, 48)
    h = x.T @ x / len(x)
    prepared = prepare(h, 48, order="natural")
    damped = h + np.eye(48) * 0.01 * np.mean(np.diag(h))
    a, eye = prepared.feedback, np.eye(48)
    assert np.array_equal(np.triu(a, 1), a)
    assert np.allclose((eye + a) @ np.diag(prepared.pivots) @ (eye + a).T, damped, rtol=1e-10, atol=1e-12)
    order = prepare(h, 48).order
    assert order.tolist() == np.argsort(-np.diag(h), kind="stable").tolist()


def gptq_codes(w, h, params, positions, bits):
    """GPTQ's loop in float64 numpy (natural order, uniform levels): each column's error fed forward
    through the upper Cholesky factor of H^-1."""
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    codes = np.zeros(w.shape, np.int64)
    top, sign = (1 << bits) - 1, 1 << (bits - 1)
    for r, row in enumerate(w.astype(np.float64)):
        offset, scale, o_offset, o_scale = (np.float32(v) for v in params[r].view(np.float16))
        row = row.copy()
        for k in range(row.size):
            v = row[k]
            if k in positions[r]:
                m = int(np.clip(np.rint((abs(v) - o_offset) / o_scale), 0, sign - 1))
                value = float(o_offset + np.float32(m) * o_scale) * (-1 if v < 0 else 1)
                codes[r, k] = m | (sign if v < 0 else 0)
            else:
                codes[r, k] = int(np.clip(np.rint((v - offset) / scale), 0, top))
                value = float(offset + np.float32(codes[r, k]) * scale)
            row[k + 1 :] -= (v - value) / u[k, k] * u[k, k + 1 :]
    return codes


def test_rounding_gives_the_codes_of_gptq(rng):
    x = correlated_inputs(rng, 96)
    h = x.T @ x / len(x)
    w = (rng.standard_t(4, size=(32, 96)) * 0.02).astype(np.float32)
    prepared = prepare(h, 96, order="natural")
    inlier_base, outlier_base = np.arange(8.0), np.arange(4.0)
    _, params, positions, _ = encode_rows(w, prepared.weights, w.shape[1], np.array([5]), 3, inlier_base, outlier_base, True, CLIP_STARTS,
                                          REFITS)  # fmt: skip
    codes, _ = rounded_codes(w, prepared.order, prepared.feedback, prepared.pivots, params, positions, 3, inlier_base,
                             outlier_base, True)  # fmt: skip
    damped = h + np.eye(96) * 0.01 * np.mean(np.diag(h))
    assert np.array_equal(codes, gptq_codes(w, damped, params, positions, 3))


@pytest.mark.parametrize("statistic", ["none", "diagonal", "full"])
@pytest.mark.parametrize("quantizer", ["uniform", "codebook"])
def test_the_encoders_error_is_the_damped_output_error_of_its_decode(rng, statistic, quantizer):
    x = correlated_inputs(rng, 96)
    h = x.T @ x / len(x)
    w = (rng.standard_t(4, size=(40, 96)) * 0.02).astype(np.float32)
    stat = {"none": None, "diagonal": np.diag(h).copy(), "full": h}[statistic]
    options = EncodeOptions(bits=3, quantizer=quantizer, order="activation")
    _, _, error = encode_icq(w, options, None if stat is None else prepare(stat, 96))
    decoded = files.load(encoded(w, options, stat))["w"]
    assert error == pytest.approx(hessian.output_error(w, decoded, stat), rel=1e-9)
    assert hessian.output_error(w, decoded, stat) > 0


@pytest.mark.parametrize("quantizer", ["uniform", "codebook"])
@pytest.mark.parametrize("bits", [2, 3])
def test_statistics_lower_the_output_error(rng, bits, quantizer):
    x = correlated_inputs(rng, 256)
    h = x.T @ x / len(x)
    w = (rng.standard_t(4, size=(128, 256)) * 0.02).astype(np.float32)
    options = EncodeOptions(bits=bits, quantizer=quantizer)
    errors = {}
    for label, statistic in (("none", None), ("diagonal", np.diag(h).copy()), ("full", h)):
        data = encoded(w, options, statistic)
        errors[label] = output_error(w, check_backends_agree(data)["w"], h)
    assert errors["full"] < 0.5 * errors["none"] and errors["diagonal"] <= errors["none"] * 1.01, errors
    natural = output_error(w, files.load(encoded(w, EncodeOptions(bits=bits, order="natural"), h))["w"], h)
    assert natural < 0.7 * errors["none"], (natural, errors)


SCRIPT = """
import hashlib, sys
import numpy as np
sys.path.insert(0, "tests")
from test_hessian import correlated_inputs, encoded
from icqcodec.encode import EncodeOptions
rng = np.random.default_rng(5)
x = correlated_inputs(rng, 200, 2048)
h = (x.T @ x / len(x)).astype(np.float32)
w = (rng.standard_t(4, size=(96, 200)) * 0.02).astype(np.float32)
print(hashlib.sha256(encoded(w, EncodeOptions(bits=2), h)).hexdigest())
"""


def test_calibrated_encoding_does_not_depend_on_the_thread_count():
    digests = set()
    for threads in ("1", "2"):
        env = {"NUMBA_NUM_THREADS": threads, "PATH": "", "PYTHONHASHSEED": "0"}
        done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, check=False)
        assert done.returncode == 0, done.stderr
        digests.add(done.stdout.strip())
    assert len(digests) == 1, digests
    assert len(digests.pop()) == 64
