"""Collecting calibration statistics with PyTorch (optional extra ``icqcodec[calibrate]``).

For every ``torch.nn.Linear`` of a module, the second moment of its input ``E[x x^T]``, accumulated
in float64 and stored float32 with its token count; above ``diagonal_above`` inputs only the
diagonal ``E[x_j^2]``. Linears that read the very same input tensor in a forward pass (attention
q/k/v, MLP gate/up) share one statistic. The core package and the decoders never import this
module; the result is an :class:`icqcodec.calibration.Statistics`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch

from .calibration import DIAGONAL_ABOVE, Statistics

__all__ = ["Accumulator", "collect_statistics"]


class Accumulator:
    """Sums ``x^T x`` (or ``x * x``) of each linear's input while its hooks are attached."""

    def __init__(self, module: torch.nn.Module, *, prefix: str = "", diagonal_above: int = DIAGONAL_ABOVE) -> None:
        self.linears = {f"{prefix}{name}.weight" if name else f"{prefix}weight": m
                        for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)}  # fmt: skip
        self.diagonal_above = diagonal_above
        self.sums: dict[str, torch.Tensor] = {}
        self.tokens: dict[str, int] = {}
        self.aliases: dict[str, str] = {}
        self._seen: dict[int, tuple[str, torch.Tensor]] = {}  # id of an input -> (first reader, the input)

    def _hook(self, name: str):
        def record(module, args):
            x = args[0]
            earlier = self._seen.get(id(x))
            if earlier is not None and earlier[1] is x:  # the same tensor read by an earlier linear
                self.aliases.setdefault(name, earlier[0])
                return
            self._seen[id(x)] = (name, x)
            flat = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)
            product = (flat * flat).sum(0) if flat.shape[1] > self.diagonal_above else flat.T @ flat
            if name in self.sums:
                self.sums[name] += product
            else:
                self.sums[name] = product
            self.tokens[name] = self.tokens.get(name, 0) + flat.shape[0]

        return record

    @contextmanager
    def attached(self) -> Iterator[Accumulator]:
        """Hooks on every linear within the block; each call of the block's forwards is one pass."""
        handles = [m.register_forward_pre_hook(self._hook(name)) for name, m in self.linears.items()]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def new_pass(self) -> None:
        """Forget which tensors were read (call between forward passes)."""
        self._seen.clear()

    def result(self) -> Statistics:
        moments = {n: (s / self.tokens[n]).to(torch.float32).cpu().numpy() for n, s in self.sums.items()}
        aliases = {n: a for n, a in self.aliases.items() if n not in self.sums and a in self.sums}
        return Statistics(moments, dict(self.tokens), aliases)


def collect_statistics(module: torch.nn.Module, batches: Iterable, *, prefix: str = "",
                       diagonal_above: int = DIAGONAL_ABOVE) -> Statistics:  # fmt: skip
    """Run ``module`` on each batch (a tensor, a tuple of positional arguments or a dict of keyword
    arguments) without gradients and return the statistics of its linears' inputs, keyed
    ``prefix + <module name>.weight``.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> stats = collect_statistics(net, [torch.randn(16, 8) for _ in range(3)])
        >>> sorted(stats.moments), stats.moments["0.weight"].shape, stats.tokens["2.weight"]
        (['0.weight', '2.weight'], (8, 8), 48)
    """
    accumulator = Accumulator(module, prefix=prefix, diagonal_above=diagonal_above)
    with torch.no_grad(), accumulator.attached():
        for batch in batches:
            accumulator.new_pass()
            if isinstance(batch, dict):
                module(**batch)
            elif isinstance(batch, tuple):
                module(*batch)
            else:
                module(batch)
    return accumulator.result()
