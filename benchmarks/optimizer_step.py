"""Time one ``step()`` of every optimizer: ours against torch.optim, on the same parameters.

The parameter list is shaped like a small transformer (≈26 M fp32 parameters in 243
tensors). For each optimizer we time our per-tensor reference path (the default on CPU),
our foreach path (the default on CUDA) and, with ``--compile``, ``torch.compile`` of our
foreach step; and torch.optim's loop, foreach and (where torch has one) fused path. Every
figure is reported as a ratio to torch's foreach step measured in the same run, plus the
effective memory bandwidth implied by the bytes an update must move (REFERENCE.md: reads +
writes per fp32 parameter).

Variants of one optimizer are timed in interleaved rounds so that drift in machine load
hits them alike; the figure is the median over rounds.

    python -m benchmarks.optimizer_step            # CPU, and CUDA when present
    python -m benchmarks.optimizer_step --compile  # also time torch.compile of our step
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

import optimizers
from benchmarks.recording import environment_lines, write_section


@dataclass(frozen=True)
class Counterpart:
    """How to build torch.optim's version of one of our optimizers."""

    torch_class: type[torch.optim.Optimizer] | None
    kwargs: dict
    has_fused: bool
    bytes_per_param: int  # fp32 reads + writes of one update (REFERENCE.md)


COUNTERPARTS: dict[str, Counterpart] = {
    "sgd": Counterpart(torch.optim.SGD, {"lr": 1e-3}, True, 12),
    "momentum": Counterpart(torch.optim.SGD, {"lr": 1e-3, "momentum": 0.9}, True, 20),
    "nesterov": Counterpart(
        torch.optim.SGD, {"lr": 1e-3, "momentum": 0.9, "nesterov": True}, True, 20
    ),
    "adagrad": Counterpart(torch.optim.Adagrad, {}, True, 20),
    "rmsprop": Counterpart(torch.optim.RMSprop, {}, False, 20),
    "adam": Counterpart(torch.optim.Adam, {}, True, 28),
    "adamw": Counterpart(torch.optim.AdamW, {}, True, 28),
    "nadam": Counterpart(torch.optim.NAdam, {}, False, 28),
    "amsgrad": Counterpart(torch.optim.Adam, {"amsgrad": True}, True, 36),
    # Lion: param + grad + momentum read, param + momentum written.
    "lion": Counterpart(None, {}, False, 20),
}
OUR_KWARGS: dict[str, dict] = {"sgd": {"lr": 1e-3}}


def transformer_like_shapes(
    layers: int = 20, width: int = 320, vocab: int = 4096
) -> list[tuple[int, ...]]:
    """Shapes of a pre-norm transformer's parameters: many mid-sized matrices and vectors."""
    shapes: list[tuple[int, ...]] = [(vocab, width), (1024, width)]  # token, position
    for _ in range(layers):
        shapes += [(width,), (width,)]  # attention layer norm
        shapes += [(3 * width, width), (3 * width,), (width, width), (width,)]
        shapes += [(width,), (width,)]  # MLP layer norm
        shapes += [(4 * width, width), (4 * width,), (width, 4 * width), (width,)]
    shapes.append((width,))  # final norm
    return shapes


def make_params(device: torch.device, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    params = []
    for shape in transformer_like_shapes():
        p = torch.randn(shape, generator=gen).to(device).requires_grad_()
        p.grad = torch.randn(shape, generator=gen).to(device) * 1e-2
        params.append(p)
    return params


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], object], device: torch.device, steps: int) -> float:
    """Seconds per step over ``steps`` consecutive steps."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def variants(
    name: str, params: list[torch.Tensor], device: torch.device, compile_step: bool
) -> dict[str, Callable[[], object]]:
    """Every way of stepping optimizer ``name`` that this run times, by label."""
    counterpart = COUNTERPARTS[name]
    ours = OUR_KWARGS.get(name, {})
    steps: dict[str, Callable[[], object]] = {
        "ours reference": optimizers.build_optimizer(name, params, foreach=False, **ours).step,
        "ours foreach": optimizers.build_optimizer(name, params, foreach=True, **ours).step,
    }
    if compile_step:
        compiled = optimizers.build_optimizer(name, params, foreach=True, **ours)
        steps["ours compiled"] = torch.compile(compiled.step)
    if counterpart.torch_class is not None:
        cls, kwargs = counterpart.torch_class, counterpart.kwargs
        steps["torch loop"] = cls(params, foreach=False, **kwargs).step
        steps["torch foreach"] = cls(params, foreach=True, **kwargs).step
        if counterpart.has_fused and device.type in ("cpu", "cuda"):
            steps["torch fused"] = cls(params, fused=True, **kwargs).step
        if compile_step:
            steps["torch compiled"] = torch.compile(cls(params, foreach=True, **kwargs).step)
    return steps


def measure(
    name: str, device: torch.device, rounds: int, steps: int, compile_step: bool
) -> dict[str, float | str]:
    """Median seconds per step of each variant (or the error that stopped it)."""
    params = make_params(device)
    results: dict[str, list[float]] = {}
    failures: dict[str, str] = {}
    stepping = variants(name, params, device, compile_step)
    for label, step in stepping.items():
        try:
            for _ in range(3):  # warm-up: lazy state, compilation, allocator
                step()
            results[label] = []
        except Exception as error:  # a failing variant is reported, not fatal
            failures[label] = f"{type(error).__name__}: {str(error).splitlines()[0][:80]}"
    for _ in range(rounds):
        for label in results:
            results[label].append(time_steps(stepping[label], device, steps))
    medians: dict[str, float | str] = {k: statistics.median(v) for k, v in results.items()}
    medians.update(failures)
    return medians


LABELS = [
    "ours reference",
    "ours foreach",
    "ours compiled",
    "torch loop",
    "torch foreach",
    "torch fused",
    "torch compiled",
]


def render(device: torch.device, table: dict[str, dict[str, float | str]], args) -> str:
    n_params = sum(p.numel() for p in make_params(torch.device("cpu")))
    n_tensors = len(transformer_like_shapes())
    labels = [label for label in LABELS if any(label in row for row in table.values())]
    # optimizers.Optimizer's rule for foreach=None, as torch.optim's
    default = "ours foreach" if device.type == "cuda" else "ours reference"
    lines = [
        f"### optimizer step on {device.type.upper()}",
        "",
        *environment_lines(device),
        f"- parameters: {n_params / 1e6:.1f} M fp32 in {n_tensors} tensors (transformer-like)",
        f"- median of {args.rounds} interleaved rounds × {args.steps} steps",
        f"- reproduce: `python -m benchmarks.optimizer_step"
        f"{' --compile' if args.compile else ''}`",
        "",
        "Time per step (ms) and ratio to torch foreach (lower is faster). Our default "
        f"(`foreach=None`) on {device.type.upper()} is **{default}**; the last column is its "
        "effective bandwidth (bytes an update must move / time).",
        "",
        "| optimizer | " + " | ".join(labels) + " | ours default GB/s |",
        "|---" * (len(labels) + 2) + "|",
    ]
    for name, row in table.items():
        reference = row.get("torch foreach")
        cells = []
        for label in labels:
            value = row.get(label)
            if value is None:
                cells.append("—")
            elif isinstance(value, str):
                cells.append(f"failed ({value})")
            elif isinstance(reference, float):
                cells.append(f"{value * 1e3:.2f} ({value / reference:.2f}×)")
            else:
                cells.append(f"{value * 1e3:.2f}")
        ours = row.get(default)
        bandwidth = (
            f"{COUNTERPARTS[name].bytes_per_param * n_params / ours / 1e9:.1f}"
            if isinstance(ours, float)
            else "—"
        )
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {bandwidth} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizers", nargs="*", default=list(COUNTERPARTS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--device", choices=["cpu", "cuda"], action="append")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    for device_name in devices:
        device = torch.device(device_name)
        table = {}
        for name in args.optimizers:
            table[name] = measure(name, device, args.rounds, args.steps, args.compile)
            print(
                name,
                {
                    k: f"{v * 1e3:.2f} ms" if isinstance(v, float) else v
                    for k, v in table[name].items()
                },
                flush=True,
            )
        markdown = render(device, table, args)
        print(markdown)
        if not args.no_write:
            write_section(
                f"optimizer_step_{device.type}{'_compiled' if args.compile else ''}", markdown
            )


if __name__ == "__main__":
    main()
