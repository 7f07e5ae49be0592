"""Throughput and peak memory of the SleepFM encoder; its tokenizer against the reference recipe.

A night is 8 h of BAS 10, RESP 7, ECG 2 and EMG 4 channels at 128 Hz, encoded as ``sleepfm embed``
encodes it: batches of ``EmbedConfig.batch_size`` 5-minute windows of the record with their channel
masks, each batch a fresh tensor (as the DataLoader's collate makes it), under ``inference_mode``.
Prints, side by side, seconds per night, nights per second, peak memory and minor page faults per
night; then training samples per second (forward + backward + AdamW with the leave-one-out
objective), and the tokenizer's speed-up over an in-file re-implementation of the reference
tokenizer's layer recipe. ``--profile`` adds seconds and GFLOP per night of each part.

Every figure is the best of several runs after a warm-up: other processes on a shared machine only
ever add time. The two tokenizers are timed on the same windows, in the same chunks of tokens, on
the same threads, interleaved.

    python benchmarks/encoder.py                          # CPU, fp32
    python benchmarks/encoder.py --profile --skip-training
    python benchmarks/encoder.py --device cuda --precision bf16 --compile
"""
from __future__ import annotations

import argparse
import contextlib
import math
import resource
import time
from functools import partial

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sleepfm.config import EmbedConfig
from sleepfm.models import count_parameters, create_encoder
from sleepfm.ssl import create_objective

MONTAGE = {"BAS": 10, "RESP": 7, "ECG": 2, "EMG": 4}
SAMPLES_PER_TOKEN = 640  # 5 s at 128 Hz
TOKENS_PER_WINDOW = 60   # 5 minutes
PARTS = {"tokenizer": "tokenizer", "pool": "channel pool", "transformer": "temporal transformer"}


class ReferenceTokenizer(nn.Module):
    """The reference tokenizer's layer recipe: 6 x [Conv1d k5 s2 -> BatchNorm -> ELU -> LayerNorm
    over time], channels 1 -> 4 -> 8 -> 16 -> 32 -> 64 -> 128, then average pooling and a linear
    layer to the 128-D token."""

    def __init__(self, dim: int = 128, samples: int = SAMPLES_PER_TOKEN) -> None:
        super().__init__()
        chans = (1, 4, 8, 16, 32, 64, dim)
        layers, length = [], samples
        for ci, co in zip(chans[:-1], chans[1:]):
            length = (length + 2 * 2 - 5) // 2 + 1
            layers += [nn.Conv1d(ci, co, 5, stride=2, padding=2), nn.BatchNorm1d(co), nn.ELU(),
                       nn.LayerNorm(length)]
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.convs(x.unsqueeze(1)).mean(dim=-1))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def page_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def best(measure, *, repeats: int, warmup: int = 1) -> float:
    """Best of ``repeats`` calls of ``measure()`` (which returns seconds) after ``warmup`` calls."""
    for _ in range(warmup):
        measure()
    return min(measure() for _ in range(repeats))


def windows(n: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(n, c, TOKENS_PER_WINDOW * SAMPLES_PER_TOKEN, generator=g).to(device)
            for m, c in MONTAGE.items()}


def memory(device: torch.device) -> str:
    line = f"peak RSS {peak_rss_mib():.0f} MiB"
    if device.type == "cuda":
        line += f", CUDA max allocated {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
        torch.cuda.reset_peak_memory_stats(device)
    return line


class PartTimer:
    """Seconds spent in each part of every modality's encoder, through forward hooks (removed
    by :meth:`remove`)."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.device = device
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self._start: dict[str, float] = {}
        self._hooks = []
        for encoder in model.encoders.values():
            for part in PARTS:
                module = getattr(encoder, part)
                self._hooks += [module.register_forward_pre_hook(lambda *_, p=part: self._enter(p)),
                                module.register_forward_hook(lambda *_, p=part: self._leave(p))]

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()

    def _enter(self, part: str) -> None:
        synchronize(self.device)
        self._start[part] = time.perf_counter()

    def _leave(self, part: str) -> None:
        synchronize(self.device)
        self.seconds[part] += time.perf_counter() - self._start[part]


def bench_inference(model: nn.Module, args: argparse.Namespace, device: torch.device,
                    autocast, per_night: int) -> None:
    run = torch.compile(model) if args.compile else model
    sizes = [min(args.batch, per_night - i) for i in range(0, per_night, args.batch)]
    batches = {n: windows(n, device) for n in set(sizes)}
    masks = {n: {m: torch.ones(n, c, dtype=torch.bool, device=device) for m, c in MONTAGE.items()}
             for n in set(sizes)}

    faults: list[int] = []  # per batch

    def night() -> float:
        """Encoder seconds for one night, each batch a fresh copy (as a DataLoader makes it)."""
        total = 0.0
        with torch.inference_mode(), autocast:
            for n in sizes:
                x = {m: t.clone() for m, t in batches[n].items()}
                before = page_faults()
                total += seconds(partial(run, x, masks[n]), device)
                faults.append(page_faults() - before)
        return total

    sec = best(night, repeats=args.nights)
    print(f"inference: {sec:.3f} s/night, {1 / sec:.3f} nights/s, {memory(device)}, "
          f"{sum(faults) / (args.nights + 1):,.0f} page faults/night (batch {args.batch} windows)")
    if args.profile:
        profile(model, night, sizes, batches, masks, args, device, autocast)


def profile(model: nn.Module, night, sizes: list[int], batches: dict, masks: dict,
            args: argparse.Namespace, device: torch.device, autocast) -> None:
    """Seconds (best of ``args.nights``) and GFLOP per night of each part of the encoder."""
    timer = PartTimer(model, device)
    fastest = dict.fromkeys((*PARTS, "rest"), math.inf)
    for _ in range(args.nights):
        timer.seconds = dict.fromkeys(PARTS, 0.0)
        rest = night() - sum(timer.seconds.values())
        fastest = {part: min(fastest[part], sec)
                   for part, sec in {**timer.seconds, "rest": rest}.items()}
    timer.remove()
    with torch.inference_mode(), autocast, FlopCounterMode(display=False) as flops:
        for n in sizes:
            model(batches[n], masks[n])
    counts = flops.get_flop_counts()
    for part, name in PARTS.items():
        gflop = sum(sum(v.values()) for k, v in counts.items() if k.endswith(f".{part}")) / 1e9
        print(f"  {name:20s} {fastest[part]:6.3f} s/night  {gflop:6.1f} GFLOP/night")
    total = sum(counts["Global"].values()) / 1e9
    print(f"  {'rest':20s} {fastest['rest']:6.3f} s/night  ({total:.1f} GFLOP/night in all: "
          "matrix products and convolutions, not attention, activations or norms)")


def bench_training(args: argparse.Namespace, device: torch.device, autocast) -> None:
    model = create_encoder(args.encoder).to(device).train()
    run = torch.compile(model) if args.compile else model
    objective = create_objective("loo_contrastive")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = windows(args.train_batch, device, seed=1)

    def step() -> None:
        with autocast:
            out = run(x)
            loss = objective(objective.pool(out.tokens), out.present)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    sec = best(lambda: seconds(step, device), repeats=args.train_steps)
    print(f"training: {args.train_batch / sec:.1f} samples/s, {sec:.3f} s/step, {memory(device)} "
          f"(batch {args.train_batch} windows, loo_contrastive, AdamW)")


def bench_tokenizers(ours: nn.Module, args: argparse.Namespace, device: torch.device,
                     autocast, per_night: int) -> None:
    reference = ReferenceTokenizer().to(device).eval()
    g = torch.Generator().manual_seed(2)
    n_win = args.reference_windows or args.batch
    inputs = [torch.randn(n_win * c * TOKENS_PER_WINDOW, SAMPLES_PER_TOKEN, generator=g).to(device)
              for c in MONTAGE.values()]
    valid = [torch.ones(len(t), dtype=torch.bool, device=device) for t in inputs]
    chunk = ours.cpu_chunk if device.type == "cpu" else None  # ours' own chunks, for both

    def chunked_reference(t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.cat([reference(p) for p in t.split(chunk)]) if chunk else reference(t)

    runs = {"ours": ours, "reference": chunked_reference}
    runs = {name: torch.compile(fn) if args.compile else fn for name, fn in runs.items()}

    def tokenize(name: str) -> float:
        with torch.inference_mode(), autocast:
            return seconds(lambda: [runs[name](t, v) for t, v in zip(inputs, valid)], device)

    results, faults = dict.fromkeys(runs, math.inf), dict.fromkeys(runs, 0)
    for repeat in range(args.tokenizer_repeats + 1):  # the first round warms up
        for name in runs:  # interleaved, so a busy spell of the machine hits both
            before = page_faults()
            sec = tokenize(name)
            if repeat:
                results[name] = min(results[name], sec)
                faults[name] += page_faults() - before
    scale = per_night / n_win
    for name, module in (("ours", ours), ("reference", reference)):
        print(f"tokenizer {name:9s}: {count_parameters(module):7,} parameters, "
              f"{results[name] * scale:.3f} s/night, "
              f"{faults[name] * scale / args.tokenizer_repeats:,.0f} page faults/night")
    how = f"chunks of {chunk} tokens" if chunk else "one call per modality"
    print(f"tokenizer speed-up: {results['reference'] / results['ours']:.1f}x "
          f"({n_win} windows, {how}, best of {args.tokenizer_repeats})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoder")
    parser.add_argument("--encoder", default="sleepfm_base")
    parser.add_argument("--hours", type=float, default=8.0, help="length of a night")
    parser.add_argument("--batch", type=int, default=EmbedConfig().batch_size,
                        help="5-minute windows per forward pass (default: sleepfm embed's)")
    parser.add_argument("--nights", type=int, default=3, help="nights timed for inference (best)")
    parser.add_argument("--profile", action="store_true",
                        help="also print seconds and GFLOP per night of each part")
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=3, help="steps timed (best)")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--reference-windows", type=int, default=None,
                        help="windows the two tokenizers are timed on, scaled to a night "
                             "(default: --batch)")
    parser.add_argument("--tokenizer-repeats", type=int, default=3, help="runs timed (best)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda, but no CUDA device is visible")
        torch.backends.cudnn.benchmark = True        # fixed shapes: pick the fastest conv kernels
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 runs use TF32 tensor cores
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16"
                else contextlib.nullcontext())

    per_night = math.ceil(args.hours * 3600 / (TOKENS_PER_WINDOW * 5))
    channel_tokens = per_night * TOKENS_PER_WINDOW * sum(MONTAGE.values())
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}")
    print(f"device {device} ({where}), precision {args.precision}, compile {args.compile}, "
          f"torch {torch.__version__}")
    print(f"night: {args.hours:g} h, {per_night} windows of 5 min, montage {MONTAGE}, "
          f"{channel_tokens} channel-tokens")

    torch.manual_seed(0)
    model = create_encoder(args.encoder).to(device).eval()
    print(f"encoder {args.encoder}: {count_parameters(model):,} parameters")
    bench_inference(model, args, device, autocast, per_night)
    if not args.skip_training:
        bench_training(args, device, autocast)
    bench_tokenizers(model.encoders["BAS"].tokenizer, args, device, autocast, per_night)


if __name__ == "__main__":
    main()
