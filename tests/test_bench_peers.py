"""The rate-distortion study's peers and bookkeeping (bench/), checked on small inputs."""

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import rate_distortion as rd  # noqa: E402
from peers import ggml, hqq_peer, quip_sharp, scalar  # noqa: E402


def in_e8(v: np.ndarray) -> bool:
    doubled = 2 * v
    if not np.allclose(doubled, np.rint(doubled)):
        return False
    integral = np.allclose(v, np.rint(v))
    half = np.allclose(v - 0.5, np.rint(v - 0.5))
    return (integral or half) and np.isclose(v.sum() % 2, 0)


@pytest.mark.parametrize("n", [1, 2, 12, 24, 64, 384])
def test_hadamard_is_orthogonal(n):
    h = quip_sharp.hadamard(n)
    assert set(np.unique(h)) <= {-1.0, 1.0}
    assert (h @ h.T == n * np.eye(n)).all()


def test_hadamard_refuses_other_orders():
    with pytest.raises(ValueError, match="20"):
        quip_sharp.hadamard(20)


def full_e8p_codebook() -> np.ndarray:
    words = []
    for source in quip_sharp.e8p_sources():
        for signs in itertools.product((-1.0, 1.0), repeat=8):
            v = np.array(signs) * source
            if v.sum() % 2 == 0:
                words += [v + 0.25, v - 0.25]
    return np.array(words)


def test_e8p_is_16_bits_of_the_shifted_e8_lattice():
    codebook = full_e8p_codebook()
    assert codebook.shape == (1 << 16, 8)
    assert len(np.unique(codebook, axis=0)) == 1 << 16
    outside = [i for i, w in enumerate(codebook[::97]) if not in_e8(w - 0.25)]
    assert outside == [], outside


def test_e8p_search_is_the_nearest_codeword():
    x = np.random.default_rng(3).standard_normal((300, 8)) * 1.1
    codebook = full_e8p_codebook()
    brute, _ = quip_sharp.brute_force_search(x, codebook)
    fast = quip_sharp.STAGES["e8p"](x)
    assert (((x - fast) ** 2).sum(1) == ((x - brute) ** 2).sum(1)).all()


def test_e8_residual_codebook():
    roots = quip_sharp.e8_roots()
    assert roots.shape == (241, 8)
    assert len(np.unique(roots, axis=0)) == 241
    wrong = [r for r in roots if not (in_e8(r) and (r**2).sum() <= 2)]
    assert wrong == [], wrong


def test_quip_sharp_on_gaussian_weights_matches_e8p_distortion():
    # E8P's mean squared error on unit Gaussians is about 0.092 (scalar Lloyd-Max at 2 bits: 0.118)
    w = np.random.default_rng(0).standard_normal((128, 256)).astype(np.float32)
    errors = [float(((quip_sharp.quantize(w, bits) - w) ** 2).sum() / (w**2).sum()) for bits in (2, 3, 4)]
    assert 0.085 < errors[0] < 0.1
    assert errors[0] > errors[1] > errors[2]
    assert quip_sharp.rate(w.shape, 2) == 2 + (64 + 32) / w.size


def test_rtn_is_exact_on_its_own_grid():
    w = np.tile(np.array([0.0, 0.5, 1.0, 1.5], np.float32), (8, 32))
    restored, bits = scalar.rtn(w, 2, 64)
    assert (restored == w).all() and bits == 2.5
    assert scalar.rtn(w, 2, None)[1] == 2 + 32 / 128


def test_adadim_takes_the_better_axis():
    column_constant = np.tile(np.random.default_rng(1).standard_normal(128).astype(np.float32), (128, 1))
    restored, _ = scalar.adadim(column_constant, 2, 64)
    assert np.abs(restored - column_constant).max() < 5e-3  # constant column groups: fp16 rounding only
    assert np.abs(scalar.rtn(column_constant, 2, 64)[0] - column_constant).max() > 5e-2


def test_ggml_rates_come_from_the_bytes():
    w = np.random.default_rng(2).standard_normal((4, 256)).astype(np.float32)
    rates = {kind: ggml.quantize(w, kind)[1] for kind in ggml.TYPES}
    assert rates == {"Q4_0": 4.5, "Q4_1": 5.0, "Q5_0": 5.5, "Q5_1": 6.0, "Q8_0": 8.5}


def test_hqq_peer_reports_why_it_cannot_run_or_runs():
    note = hqq_peer.available()
    if note is not None:
        assert "HQQ not run" in note
        return
    w = np.random.default_rng(4).standard_normal((64, 128)).astype(np.float32)
    restored, bits = hqq_peer.quantize(w, 4)
    assert bits == 4.5 and 0 < ((restored - w) ** 2).sum() / (w**2).sum() < 0.02


POINTS = [
    {"method": "icq uniform, 5% outliers", "setting": "2 bits", "bits": 2.4, "error": 0.07},
    {"method": "icq uniform, 5% outliers", "setting": "3 bits", "bits": 3.4, "error": 0.02},
    {"method": "icq uniform, 0% outliers", "setting": "3 bits", "bits": 3.1, "error": 0.04},
    {"method": "icq uniform, 0% outliers", "setting": "4 bits", "bits": 4.1, "error": 0.03},
    {"method": "RTN g64", "setting": "3 bits", "bits": 3.5, "error": 0.04},
    {"method": "RTN g64", "setting": "2 bits", "bits": 2.5, "error": 0.01},
    {"method": rd.QUIP, "setting": "2 bits", "bits": 2.0, "error": 0.05},
    {"method": "gguf", "setting": "Q8_0", "bits": 8.5, "error": 0.0001},
]


def test_frontier_and_budgets():
    assert [p["bits"] for p in rd.icq_frontier(POINTS)] == [2.4, 3.1, 3.4]
    assert rd.smallest_icq_budget(POINTS, 0.04)["bits"] == 3.1
    assert rd.smallest_icq_budget(POINTS, 0.001) is None
    assert rd.icq_bits_at(POINTS, 0.07) == 2.4
    assert rd.icq_bits_at(POINTS, 0.5) == 2.4
    assert rd.icq_bits_at(POINTS, 0.001) is None
    assert 2.4 < rd.icq_bits_at(POINTS, 0.05) < 3.1


def test_comparison_covers_peers_in_range_only():
    rows = {(r["method"], r["setting"]): r for r in rd.comparison(POINTS)}
    assert set(rows) == {("RTN g64", "3 bits"), ("RTN g64", "2 bits")}
    assert rows["RTN g64", "3 bits"]["holds"] and not rows["RTN g64", "2 bits"]["holds"]
    gap = rd.quip_gaps(POINTS)[0]
    assert gap["gap"] == pytest.approx(rd.icq_bits_at(POINTS, 0.05) - 2.0, abs=1e-4)


def test_study_is_deterministic():
    rng = np.random.default_rng(5)
    matrices = {"a": rng.standard_t(4, size=(128, 384)).astype(np.float32)}
    first, second = rd.study(matrices), rd.study(matrices)
    assert first == second
    methods = {p["method"] for p in first["points"]}
    assert {"RTN per row", "AdaDim g64", "gguf", rd.QUIP, "icq codebook, 8% outliers"} <= methods
    assert len(first["positions"]) == len(rd.RATIOS) - 1


def test_gptq_peer_beats_rounding_on_the_output_error():
    from peers.gptq import gptq
    from peers.scalar import rtn_groups

    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2048, 128)) * np.exp(rng.standard_normal(128))) @ (
        np.eye(128) + 0.1 * rng.standard_normal((128, 128))
    )
    h = x.T @ x / len(x)
    w = rng.standard_normal((32, 128)).astype(np.float32)

    def output_error(q):
        d = w - q
        return float(np.einsum("ij,jk,ik->", d, h, d))

    q, rate = gptq(w, h, 3, 64)
    assert rate == 3.5 and q.shape == w.shape
    assert output_error(q) < 0.6 * output_error(rtn_groups(w, 3, 64))
    assert output_error(q) < output_error(gptq(w, h, 3, 64, clip=False)[0])


def test_clipping_search_lowers_the_error_of_rounding():
    w = (np.random.default_rng(4).standard_t(4, size=(64, 256)) * 0.02).astype(np.float32)
    clipped, bits = scalar.rtn_clipped(w, 2, 64)
    assert bits == 2.5
    assert ((clipped - w) ** 2).sum() < 0.9 * ((scalar.rtn(w, 2, 64)[0] - w) ** 2).sum()
    grid = np.tile(np.array([0.0, 0.5, 1.0, 1.5], np.float32), (8, 32))
    assert (scalar.rtn_clipped(grid, 2, 64)[0] == grid).all()
