"""Sub-records (spec section 10.1, informative): a run of whole segments of an icq tensor cut into
an icq tensor of its own without decoding its codes, so that a tensor-parallel loader ships each
device only its compressed columns.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .bitstream import unpack
from .column_slices import ColumnWindow, check_columns, column_window, covering_columns
from .constants import CODING_ICQ
from .container_writer import build_payload, write_container
from .icq_params import codebook_size_for
from .payload import Payload

__all__ = ["slice_record"]


def slice_record(payload: Payload, columns: tuple[int, int], rows: tuple[int, int] | None = None,
                 name: str | None = None) -> bytes:  # fmt: skip
    """A one-tensor ICQ file holding columns ``columns`` of the last axis and ``rows`` of the
    leading one (all when None) of an icq tensor, named ``name`` (the tensor's own by default),
    cut without decoding its codes (spec section 10.1): its codebook and row
    parameters copied, each row's codes its bit range, the counts and gap symbols those of the
    covered segments. ``columns`` start on a segment boundary and end on one or at the last
    column; every row must hold the same number of outliers there (ValueError otherwise, as when
    an encoder did not fix the outliers of each segment: ``outliers_per_segment``)."""
    record, p = payload.record, payload.record.params
    if record.coding != CODING_ICQ:
        raise ValueError(f"tensor {record.name!r} is stored raw: only icq tensors are cut into sub-records")
    check_columns(record, columns)
    c0, c1 = columns
    if covering_columns(record, columns) != (c0, c1) or c0 == c1:
        raise ValueError(f"columns {c0}:{c1} of tensor {record.name!r} do not start and end on its segments of "
                         f"{p.segment} columns (or at its last column, {record.cols})")  # fmt: skip
    shape = record.shape
    if rows is not None and len(shape) == 1:
        raise ValueError(f"tensor {record.name!r} has rank 1: its sub-records cut columns only")
    start, stop = rows if rows is not None else (0, shape[0])
    if not 0 <= start <= stop <= shape[0]:
        raise ValueError(f"rows {start}:{stop} are not a range of tensor {record.name!r}'s {shape[0]}")
    inner = record.rows // shape[0] if len(shape) > 1 else 1
    window = column_window(payload, (start * inner, stop * inner) if len(shape) > 1 else None, columns)
    sections, params = dict(window.sections), window.record.params
    shape = (stop - start, *shape[1:-1], c1 - c0) if len(shape) > 1 else (c1 - c0,)
    if p.outliers:
        found = _row_outliers(window)
        if found.size and (found != found[0]).any():
            low, high = int(found.min()), int(found.max())
            raise ValueError(f"tensor {record.name!r}: its rows hold {low} to {high} outliers in columns {c0}:{c1}; a "
                             "sub-record needs the same count in every row (encode with outliers_per_segment, "
                             "--outliers-per-segment)")  # fmt: skip
        outliers = int(found[0]) if found.size else 0
        if outliers == 0:  # no outlier in those columns: the sub-record has no outlier side
            row_params = np.frombuffer(sections["params"], "<u2").reshape(-1, 4)[:, :2]
            sections["params"] = row_params.astype("<u2").tobytes()
            sections.pop("counts"), sections.pop("gaps")
            if "codebook" in sections:
                sections["codebook"] = sections["codebook"][: 2 << p.bits]
            params = dataclasses.replace(params, gap_bits=0, count_bits=0, total_symbols=0)
        params = dataclasses.replace(params, outliers=outliers,
                                     codebook_size=codebook_size_for(p.bits, p.kind, outliers))  # fmt: skip
    chunk_log2 = payload.header.chunk_log2
    cut = dataclasses.replace(window.record, name=name or record.name, shape=shape, params=params, record_offset=None)
    body, table_crc = build_payload(cut, sections, chunk_log2)
    cut = dataclasses.replace(cut, size=len(body), table_crc=table_crc)
    return b"".join(bytes(piece) for piece in write_container([cut], [body], {}, chunk_log2=chunk_log2))


def _row_outliers(window: ColumnWindow) -> np.ndarray:
    """The outliers of each row of the window: its symbols that are not escapes (spec section 8)."""
    p = window.record.params
    rows, segments = window.record.rows, -(-window.record.cols // p.segment)
    counts = unpack(window.sections["counts"], rows * segments, p.count_bits).reshape(rows, segments).sum(axis=1)
    symbols = unpack(window.sections["gaps"], p.total_symbols, p.gap_bits)
    placed = np.concatenate([[0], np.cumsum(symbols != (1 << p.gap_bits) - 1)])
    ends = np.cumsum(counts)
    return placed[ends] - placed[ends - counts]
