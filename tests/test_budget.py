"""A budget of bits per weight: candidates' sizes are the encoded sizes, their errors the encoder's,
the allocation is optimal where the greedy can be, stays within the budget, and refuses what no
coding meets."""

import itertools
import json

import numpy as np
import pytest

from icqcodec import files
from icqcodec.budget import Allocation, Candidate, allocate, candidates, measure, plan
from icqcodec.calibration import Statistics
from icqcodec.constants import DEFAULT_CHUNK_LOG2
from icqcodec.container import bytes_reader, read_header
from icqcodec.container_writer import build_payload, record_size
from icqcodec.encode import ENCODER_METADATA, EncodeOptions, assemble, encode_tensor
from icqcodec.errors import InputError
from icqcodec.hessian import output_error, prepare


def moment(rng, cols: int, scale: float = 1.0) -> np.ndarray:
    x = (rng.standard_normal((2048, cols)) * np.exp(rng.standard_normal(cols))) @ (
        np.eye(cols) + 0.1 * rng.standard_normal((cols, cols))
    )
    return scale * x.T @ x / len(x)


def weights(rng, rows: int, cols: int) -> np.ndarray:
    return (rng.standard_t(4, size=(rows, cols)) * 0.02).astype(np.float32)


def encoded_file(name, w, candidate: Candidate, h) -> bytes:
    coding = candidate.coding
    options = candidate.options(EncodeOptions()) if coding == "icq" else EncodeOptions()
    entry = encode_tensor(name, w, options, coding=coding, statistic=h if coding == "icq" else None)
    return b"".join(assemble([entry], dict(ENCODER_METADATA)))


def test_a_candidates_size_is_its_encoded_payload_and_record(rng):
    w, h = weights(rng, 24, 200), moment(rng, 200)
    found = candidates("layer.w", w, EncodeOptions(), prepare(h, 200), bits=(1, 3, 8), codebook_bits=(2,),
                       ratios=(0.0, 0.05, 0.1))  # fmt: skip
    assert [c.coding for c in found].count("raw") == 1 and len(found) == 1 + 3 * 4
    for candidate in found:
        data = encoded_file("layer.w", w, candidate, h)
        (record,) = read_header(*bytes_reader(data)).tensors
        assert candidate.size == record.size + record_size(record), candidate
        # the directory of a file with one tensor and the encoder's metadata keys
        metadata = sum(8 + len(k.encode()) + len(v.encode()) for k, v in ENCODER_METADATA.items())
        assert read_header(*bytes_reader(data)).directory_size == metadata + record_size(record)


def test_build_payload_and_record_size_agree_on_a_raw_tensor(rng):
    w = weights(rng, 8, 64)
    record, sections = encode_tensor("raw.w", w, EncodeOptions(), coding="raw")
    payload, _ = build_payload(record, sections, DEFAULT_CHUNK_LOG2)
    raw = next(c for c in candidates("raw.w", w, EncodeOptions(), bits=(2,), codebook_bits=()) if c.coding == "raw")
    assert raw.size == len(payload) + record_size(record)


@pytest.mark.parametrize("statistic", ["none", "diagonal", "full"])
def test_with_every_row_sampled_the_prediction_is_the_measured_error(rng, statistic):
    w, h = weights(rng, 20, 128), moment(rng, 128)
    stat = {"none": None, "diagonal": np.diag(h).copy(), "full": h}[statistic]
    found = candidates("w", w, EncodeOptions(), None if stat is None else prepare(stat, 128), bits=(2, 4),
                       codebook_bits=(3,), ratios=(0.0, 0.05))  # fmt: skip
    for candidate in (c for c in found if c.coding == "icq"):
        decoded = files.load(encoded_file("w", w, candidate, stat))["w"]
        assert candidate.error == pytest.approx(output_error(w, decoded, stat), rel=1e-9), candidate


def test_a_sample_of_rows_predicts_the_error_of_all(rng):
    w, h = weights(rng, 256, 128), moment(rng, 128)
    found = candidates("w", w, EncodeOptions(), prepare(h, 128), bits=(2, 3), codebook_bits=(), ratios=(0.05,))
    for candidate in (c for c in found if c.coding == "icq"):
        decoded = files.load(encoded_file("w", w, candidate, h))["w"]
        assert 0.8 < candidate.error / output_error(w, decoded, h) < 1.25, candidate


def curves(rng, tensors: int, points: int, step: int) -> dict[str, list[Candidate]]:
    """Convex error curves over equal steps of bytes, and a raw candidate beyond them."""
    out = {}
    for t in range(tensors):
        start = rng.integers(1, 5) * step
        saved = np.sort(rng.uniform(1, 100, size=points - 1))[::-1]
        errors = np.concatenate([[saved.sum() + 1], saved.sum() + 1 - np.cumsum(saved)])
        out[f"t{t}"] = [Candidate("icq", int(start + i * step), float(e), bits=i + 1) for i, e in enumerate(errors)]
        out[f"t{t}"].append(Candidate("raw", int(start + points * step * 3), 0.0))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_on_convex_curves_of_equal_steps_the_allocation_is_optimal(seed):
    rng = np.random.default_rng(seed)
    options = curves(rng, 3, 5, 40)
    elements = {name: 100 for name in options}
    lowest = 8 * sum(min(c.size for c in cs) for cs in options.values()) / 300
    for budget in (lowest, lowest + 2.0, lowest + 5.5, lowest + 11.0, lowest + 30.0):
        allocation = allocate(options, elements, budget)
        limit = budget * 300 / 8
        best = min(sum(c.error for c in combo) for combo in itertools.product(*options.values())
                   if sum(c.size for c in combo) <= limit)  # fmt: skip
        assert allocation.predicted_error == pytest.approx(best), budget
        assert allocation.bits_per_weight <= budget


@pytest.mark.filterwarnings("ignore:no output sensitivities")
def test_at_the_size_of_one_width_the_allocation_spends_more_bits_where_the_statistic_is_larger(rng):
    tensors = {f"layer{i}.w": weights(rng, 64, 128) for i in range(3)}
    h = moment(rng, 128)
    statistics = Statistics({"layer0.w": h, "layer1.w": 20 * h, "layer2.w": 400 * h})
    base = EncodeOptions()
    one_width = [next(c for c in candidates(n, w, base, statistics.prepared(n), bits=(2,), codebook_bits=(2,),
                                            ratios=(0.05,)) if c.quantizer == "codebook") for n, w in tensors.items()]  # fmt: skip
    budget = 8 * sum(c.size for c in one_width) / (3 * 64 * 128)
    allocation = plan(tensors.items(), base, budget, statistics)
    assert allocation.bits_per_weight <= budget
    widths = [allocation.choices[f"layer{i}.w"].bits for i in range(3)]
    assert widths == sorted(widths) and widths[0] < widths[2], widths
    assert allocation.predicted_error < 0.8 * sum(c.error for c in one_width)


def test_sensitivities_weigh_the_errors_and_must_cover_every_tensor(rng):
    tensors = {f"layer{i}.w": weights(rng, 64, 128) for i in range(3)}
    h = moment(rng, 128)
    statistics = Statistics({name: h for name in tensors}, sensitivity={"layer0.w": 400.0, "layer1.w": 20.0,
                                                                         "layer2.w": 1.0})  # fmt: skip
    measured = measure(tensors.items(), EncodeOptions(), statistics)
    allocation = measured.allocate(3.0)
    widths = [allocation.choices[f"layer{i}.w"].bits for i in range(3)]
    assert widths == sorted(widths, reverse=True) and widths[0] > widths[2], widths
    assert allocation.report()["tensors"][0]["sensitivity"] == 400.0
    # the errors reported are the output errors, not weighed
    plain = {c.bits: c.error for c in measured.candidates["layer0.w"] if c.quantizer == "codebook" and
             c.outlier_ratio == allocation.choices["layer0.w"].outlier_ratio}  # fmt: skip
    assert allocation.choices["layer0.w"].error == pytest.approx(plain[widths[0]])
    del statistics.sensitivity["layer2.w"]
    with pytest.raises(InputError, match="not for 'layer2.w' \\(1 tensors\\): leave those out of the budget"):
        measure(tensors.items(), EncodeOptions(), statistics)
    with pytest.warns(RuntimeWarning, match="no output sensitivities in the statistics"):
        measure(tensors.items(), EncodeOptions(), Statistics({name: h for name in tensors}))


def test_budgets_no_coding_meets_are_refused_with_the_possible_range(rng):
    options = curves(rng, 2, 3, 40)
    elements = {name: 100 for name in options}
    lowest = 8 * sum(min(c.size for c in cs) for cs in options.values()) / 200
    lossless = 8 * sum(c.size for cs in options.values() for c in cs if c.coding == "raw") / 200
    possible = f"possible: {lowest:.4f} to {lossless:.4f} bits/weight"
    with pytest.raises(InputError, match=f"budget of 0.5 bits/weight is below what 1-bit codes reach; {possible}"):
        allocate(options, elements, 0.5)
    with pytest.raises(InputError, match=f"above lossless storage; {possible}"):
        allocate(options, elements, lossless + 0.01)
    assert all(c.coding == "raw" for c in allocate(options, elements, lossless).choices.values())
    with pytest.raises(InputError, match="needs at least one tensor"):
        plan([], EncodeOptions(), 3.0)


def test_the_record_of_the_choices_and_the_report():
    choices = {"b": Candidate("raw", 400, 0.0), "a": Candidate("icq", 30, 2.5, 2, 0.05, "codebook")}
    allocation = Allocation(3.5, choices, {"a": 100, "b": 100})
    allocation.measured.update({"a": 2.75, "b": 0.0})
    record = json.loads(allocation.encoder_options(EncodeOptions(bits=3)))
    assert record["bpw"] == 3.5 and record["bits"] == 3
    assert record["tensors"] == {"a": {"bits": 2, "outlier_ratio": 0.05, "quantizer": "codebook"},
                                 "b": {"coding": "raw"}}  # fmt: skip
    report = allocation.report()
    assert report["bits_per_weight"] == pytest.approx(8 * 430 / 200)
    assert (report["predicted_error"], report["measured_error"]) == (2.5, 2.75)
    assert [(t["name"], t["predicted_error"], t["measured_error"]) for t in report["tensors"]] == [
        ("a", 2.5, 2.75), ("b", 0.0, 0.0)]  # fmt: skip
