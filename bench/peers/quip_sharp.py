"""A QuIP#-style quantizer written from the QuIP# paper's description (Tseng et al., 2024).

Incoherence processing with randomized Hadamard transforms on both sides of the matrix, then
nearest-neighbour vector quantization of each run of 8 weights with the E8P codebook (2^16 points of
the shifted lattice E8 + 1/4: 16 bits per 8 weights, 2 bits/weight), and residual stages for more
bits: an E8 stage of 1 bit/weight (the 241 points of E8 with squared norm <= 2, an 8-bit index) and
E8P again for 2 bits/weight. No calibration data, no fine-tuning: the per-stage scale is chosen on
the weights themselves.

E8P here: the 256 "source" vectors are the positive half-integer vectors of squared norm <= 10 (227
of them) plus the 29 of squared norm 12 used most by nearest-neighbour coding of Gaussian vectors.
A codeword is a source vector with 7 free signs (the 8th makes the sum even, so the vector lies in
E8) shifted by +1/4 or -1/4: 8 + 7 + 1 = 16 bits.
"""

from __future__ import annotations

import functools
import itertools

import numba
import numpy as np

SEED_BITS = 64  # the random signs come from a stored seed
SCALE_BITS = 32  # one float32 scale per matrix and stage
SCALE_GRID = np.geomspace(0.5, 2.0, 9)  # then refined in steps of 3% around the best
REFINE = np.array([0.91, 0.94, 0.97, 1.0, 1.03, 1.06, 1.09])
# Residual plans: the first stage's scale times one of these, chosen by the plan's final error (a
# coarser first stage leaves a residual the next stage codes better)
FIRST_STAGE_FACTORS = (0.8, 0.85, 0.9, 0.95, 1.0)


def hadamard(n: int) -> np.ndarray:
    """An n x n Hadamard matrix (entries +-1) for n = 2^k or 12 * 2^k."""
    if n & (n - 1) == 0:
        base = np.ones((1, 1))
    elif n % 12 == 0 and (n // 12) & (n // 12 - 1) == 0:
        base = _paley12()
    else:
        raise ValueError(f"no Hadamard matrix of order {n} here (2^k or 12 * 2^k)")
    sylvester = np.ones((1, 1))
    while sylvester.shape[0] * base.shape[0] < n:
        sylvester = np.block([[sylvester, sylvester], [sylvester, -sylvester]])
    return np.kron(base, sylvester)


def _paley12() -> np.ndarray:
    """Paley's construction I for q = 11 (q = 3 mod 4): H = I + S, S skew with a Jacobsthal core."""
    q = 11
    squares = {(i * i) % q for i in range(1, q)}
    chi = np.array([0] + [1 if d in squares else -1 for d in range(1, q)])
    jacobsthal = chi[(np.arange(q)[None, :] - np.arange(q)[:, None]) % q]
    s = np.zeros((q + 1, q + 1))
    s[0, 1:], s[1:, 0], s[1:, 1:] = 1, -1, jacobsthal
    return np.eye(q + 1) + s


def random_hadamard(n: int, rng: np.random.Generator) -> np.ndarray:
    """Orthogonal n x n matrix H diag(random signs) / sqrt(n)."""
    return hadamard(n) * rng.choice([-1.0, 1.0], size=n)[None, :] / np.sqrt(n)


def _half_integer_vectors(max_norm2: float) -> np.ndarray:
    """All 8-vectors of positive half-integers with squared norm <= max_norm2, as doubled integers."""
    odd = range(1, int(np.sqrt(max_norm2 * 4)) + 1, 2)
    found = [v for v in itertools.product(odd, repeat=8) if sum(x * x for x in v) <= 4 * max_norm2]
    return np.array(found, dtype=np.int64)


@functools.cache
def e8p_sources() -> np.ndarray:
    """The 256 E8P source vectors (positive half-integers), float64, 256 x 8."""
    doubled = _half_integer_vectors(12)
    norm2 = (doubled**2).sum(1) / 4
    inner, shell = doubled[norm2 <= 10], doubled[norm2 == 12]
    samples = np.random.default_rng(0).standard_normal((1 << 15, 8))
    candidates = np.concatenate([inner, shell]) / 2
    scale = _best_scale(samples, lambda x: _e8p_nearest(x, candidates)[0])
    use = np.bincount(_e8p_nearest(samples * scale, candidates)[1], minlength=len(candidates))[len(inner) :]
    chosen = sorted(np.argsort(-use, kind="stable")[: 256 - len(inner)])
    return np.concatenate([inner, shell[chosen]]) / 2


@functools.cache
def e8_roots() -> np.ndarray:
    """The 241 points of E8 with squared norm <= 2 (origin and the 240 roots), 241 x 8."""
    integer = [v for v in itertools.product((-1, 0, 1), repeat=8) if sum(map(abs, v)) in (0, 2)]
    half = [v for v in itertools.product((-0.5, 0.5), repeat=8) if sum(v) % 2 == 0]
    return np.array(integer + half, dtype=np.float64)


@numba.njit(cache=True)
def _e8p_search(x, sources):  # pragma: no cover - compiled
    """Nearest E8P codeword to every row of x (n x 8); returns the codewords."""
    out = np.empty_like(x)
    chosen = np.empty(x.shape[0], np.int64)
    doubled = np.rint(2 * sources).astype(np.int64)
    norms = (sources * sources).sum(1)
    for i in range(x.shape[0]):
        best = np.inf
        for shift in (0.25, -0.25):
            z = x[i] - shift
            base = (z * z).sum()  # differs between the two shifts
            for s in range(sources.shape[0]):
                dot = 0.0
                parity = 0
                cheapest = np.inf
                for j in range(8):
                    term = sources[s, j] * abs(z[j])
                    dot += term
                    parity += doubled[s, j] if z[j] >= 0 else -doubled[s, j]
                    cheapest = min(cheapest, term)
                distance = base + norms[s] - 2 * dot
                if parity % 4 != 0:  # the sum must be even: flip the cheapest sign
                    distance += 4 * cheapest
                if distance < best:
                    best = distance
                    chosen[i] = s
                    flip = -1
                    if parity % 4 != 0:
                        for j in range(8):
                            if sources[s, j] * abs(z[j]) == cheapest:
                                flip = j
                                break
                    for j in range(8):
                        sign = 1.0 if z[j] >= 0 else -1.0
                        if j == flip:
                            sign = -sign
                        out[i, j] = sign * sources[s, j] + shift
    return out, chosen


@numba.njit(cache=True)
def brute_force_search(x, codebook):  # pragma: no cover - compiled
    out = np.empty_like(x)
    chosen = np.empty(x.shape[0], np.int64)
    for i in range(x.shape[0]):
        best = np.inf
        for c in range(codebook.shape[0]):
            distance = 0.0
            for j in range(8):
                d = x[i, j] - codebook[c, j]
                distance += d * d
            if distance < best:
                best = distance
                chosen[i] = c
        out[i] = codebook[chosen[i]]
    return out, chosen


def _e8p_nearest(x: np.ndarray, sources: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _e8p_search(np.ascontiguousarray(x, np.float64), sources)


STAGES = {  # E8P codes 2 bits/weight, the E8 roots 1 bit/weight
    "e8p": lambda x: _e8p_nearest(x, e8p_sources())[0],
    "e8": lambda x: brute_force_search(np.ascontiguousarray(x, np.float64), e8_roots())[0],
}
PLANS = {2: ("e8p",), 3: ("e8p", "e8"), 4: ("e8p", "e8p")}


def _best_scale(x: np.ndarray, quantize) -> float:
    """The scale s minimizing |x - quantize(x s) / s|^2 (x has unit RMS), on a grid refined once."""

    def best(grid: np.ndarray) -> float:
        errors = [((x - quantize(x * s) / s) ** 2).sum() for s in grid]
        return float(grid[int(np.argmin(errors))])

    return best(best(SCALE_GRID) * REFINE)


def _stage(x: np.ndarray, quantize, factor: float = 1.0) -> np.ndarray:
    """Quantize rows of 8 with one stage, its scale chosen on every 8th row (times ``factor``)."""
    rms = float(np.sqrt((x**2).mean())) or 1.0
    scale = _best_scale(x[::8] / rms, quantize) / rms * factor
    return quantize(x * scale) / scale


def _run_plan(x: np.ndarray, plan: tuple[str, ...], first_factor: float) -> np.ndarray:
    approx = np.zeros_like(x)
    for i, name in enumerate(plan):
        approx += _stage(x - approx, STAGES[name], first_factor if i == 0 else 1.0)
    return approx


def quantize(matrix: np.ndarray, bits: int, seed: int = 0) -> np.ndarray:
    """QuIP#-style reconstruction of a 2-D matrix at 2, 3 or 4 bits/weight (plus scales and seed)."""
    rng = np.random.default_rng(seed)
    rows, cols = matrix.shape
    left, right = random_hadamard(rows, rng), random_hadamard(cols, rng)
    x = (left @ matrix.astype(np.float64) @ right.T).reshape(-1, 8)
    plan, factor = PLANS[bits], 1.0
    if len(plan) > 1:
        sample = x[::8]
        errors = [((sample - _run_plan(sample, plan, f)) ** 2).sum() for f in FIRST_STAGE_FACTORS]
        factor = FIRST_STAGE_FACTORS[int(np.argmin(errors))]
    approx = _run_plan(x, plan, factor)
    return (left.T @ approx.reshape(rows, cols) @ right).astype(np.float32)


def rate(shape: tuple[int, int], bits: int) -> float:
    """Bits per weight of :func:`quantize`'s output, scales and seed counted."""
    count = shape[0] * shape[1]
    return (count * bits + SEED_BITS + SCALE_BITS * len(PLANS[bits])) / count
