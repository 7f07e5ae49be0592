"""Throughput and peak memory of the SleepFM encoder, and its tokenizer against the reference recipe.

A night is 8 h of BAS 10, RESP 7, ECG 2 and EMG 4 channels at 128 Hz, encoded as batches of
5-minute windows. Prints the parameter count, seconds per night, nights per second, peak memory,
training samples per second (forward + backward + AdamW with the leave-one-out objective) and the
tokenizer speed-up over an in-file re-implementation of the reference tokenizer's layer recipe.

    python benchmarks/encoder.py                          # CPU, fp32
    python benchmarks/encoder.py --device cuda --precision bf16 --compile
"""
from __future__ import annotations

import argparse
import contextlib
import math
import resource
import time

import torch
from torch import nn

from sleepfm.models import count_parameters, create_encoder
from sleepfm.ssl import create_objective

MONTAGE = {"BAS": 10, "RESP": 7, "ECG": 2, "EMG": 4}
SAMPLES_PER_TOKEN = 640  # 5 s at 128 Hz
TOKENS_PER_WINDOW = 60   # 5 minutes


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


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, *, repeats: int, warmup: int = 1) -> float:
    """Best seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs.

    The best run, not the mean, because other processes on a shared machine only ever add time.
    """
    for _ in range(warmup):
        fn()
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def windows(n: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(n, c, TOKENS_PER_WINDOW * SAMPLES_PER_TOKEN, generator=g).to(device)
            for m, c in MONTAGE.items()}


def memory_line(device: torch.device) -> str:
    line = f"  peak RSS {peak_rss_mib():.0f} MiB"
    if device.type == "cuda":
        line += f", CUDA max allocated {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
        torch.cuda.reset_peak_memory_stats(device)
    return line


def bench_inference(model: nn.Module, args: argparse.Namespace, device: torch.device,
                    autocast, per_night: int) -> None:
    run = torch.compile(model) if args.compile else model
    sizes = [min(args.batch, per_night - i) for i in range(0, per_night, args.batch)]
    batches = {n: windows(n, device) for n in set(sizes)}

    def night() -> None:
        with torch.inference_mode(), autocast:
            for n in sizes:
                run(batches[n])

    sec = timed(night, device, repeats=args.nights)
    print(f"inference: {sec:.3f} s/night, {1 / sec:.3f} nights/s (batch {args.batch} windows)")
    print(memory_line(device))


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

    sec = timed(step, device, repeats=args.train_steps)
    print(f"training: {args.train_batch / sec:.1f} samples/s ({sec:.3f} s/step, "
          f"batch {args.train_batch} windows, loo_contrastive, AdamW)")
    print(memory_line(device))


def bench_tokenizers(ours: nn.Module, args: argparse.Namespace, device: torch.device,
                     autocast, per_night: int) -> None:
    reference = ReferenceTokenizer().to(device).eval()
    g = torch.Generator().manual_seed(2)
    n_win = min(args.reference_windows, args.batch)
    inputs = [torch.randn(n_win * c * TOKENS_PER_WINDOW, SAMPLES_PER_TOKEN, generator=g).to(device)
              for c in MONTAGE.values()]
    valid = [torch.ones(len(t), dtype=torch.bool, device=device) for t in inputs]
    results = {}
    for name, tokenizer, fn in (("ours", ours, ours), ("reference", reference, lambda t, v: reference(t))):
        run = torch.compile(fn) if args.compile else fn

        def tokenize() -> None:
            with torch.inference_mode(), autocast:
                for t, v in zip(inputs, valid):
                    run(t, v)

        results[name] = timed(tokenize, device, repeats=3) * per_night / n_win
        print(f"tokenizer {name:9s}: {count_parameters(tokenizer):7,} parameters, "
              f"{results[name]:.3f} s/night")
    print(f"tokenizer speed-up: {results['reference'] / results['ours']:.1f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoder")
    parser.add_argument("--encoder", default="sleepfm_base")
    parser.add_argument("--hours", type=float, default=8.0, help="length of a night")
    parser.add_argument("--batch", type=int, default=32, help="5-minute windows per forward pass")
    parser.add_argument("--nights", type=int, default=3, help="nights timed for inference (best)")
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=3, help="steps timed (best)")
    parser.add_argument("--reference-windows", type=int, default=16,
                        help="windows the two tokenizers are timed on (scaled to a night)")
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
             else f"{torch.get_num_threads()} threads")
    print(f"device {device} ({where}), precision {args.precision}, compile {args.compile}, "
          f"torch {torch.__version__}")
    print(f"night: {args.hours:g} h, {per_night} windows of 5 min, montage {MONTAGE}, "
          f"{channel_tokens} channel-tokens")

    torch.manual_seed(0)
    model = create_encoder(args.encoder).to(device).eval()
    print(f"encoder {args.encoder}: {count_parameters(model):,} parameters")
    bench_inference(model, args, device, autocast, per_night)
    bench_training(args, device, autocast)
    bench_tokenizers(model.encoders["BAS"].tokenizer, args, device, autocast, per_night)


if __name__ == "__main__":
    main()
