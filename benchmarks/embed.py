"""The embedding job end to end (HDF5 store → embeddings files) on full 8-hour nights.

Nights have the reference montage size (BAS 10, RESP 7, ECG 2, EMG 4 channels at 128 Hz). Prints
seconds per night, nights per second and peak memory for ``sleepfm embed``'s code path, including
reading the store and writing the outputs; ``benchmarks/encoder.py`` measures the model alone.

    python benchmarks/embed.py [--nights 2] [--hours 8] [--batch-size 32] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import time

import torch

from _store import add_store_arguments, peak_mb, store_from_args
from sleepfm.artifacts import save_encoder
from sleepfm.models import count_parameters, create_encoder
from sleepfm.stages.embed import embed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_store_arguments(parser)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    run = store_from_args(args)
    torch.manual_seed(0)
    encoder = create_encoder(args.encoder)
    ckpt = save_encoder(encoder, run / "checkpoints" / "encoder")
    print(f"{args.encoder}: {count_parameters(encoder):,} parameters; {args.nights} nights of "
          f"{args.hours:g} h; device {args.device}; {torch.get_num_threads()} threads")
    base = peak_mb()
    t = time.perf_counter()
    embed(run, checkpoint=ckpt, batch_size=args.batch_size, device=args.device,
          num_workers=args.workers, overwrite=True)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    gpu = (f", GPU peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
           if args.device.startswith("cuda") else "")
    print(f"{dt / args.nights:.2f} s per night, {args.nights / dt:.3f} nights/s, "
          f"peak RSS {peak_mb():.0f} MiB (before the job {base:.0f} MiB){gpu}")


if __name__ == "__main__":
    main()
