"""Pre-training throughput through Lightning, reading 5-minute windows from the HDF5 store.

Nights have the reference montage size (BAS 10, RESP 7, ECG 2, EMG 4 channels at 128 Hz); training
runs the leave-one-out contrastive objective at batch 32 with AdamW. Prints training samples
(windows) per second over the steps after a warm-up, and peak memory.

    python benchmarks/pretrain.py [--nights 2] [--steps 20] [--batch-size 32]
                                  [--accelerator gpu --precision bf16-mixed] [--workers 4]
"""
from __future__ import annotations

import argparse
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from _store import add_store_arguments, peak_mb, store_from_args
from sleepfm.data import WindowDataModule
from sleepfm.models import create_encoder
from sleepfm.rundir import RunDir
from sleepfm.train import PretrainModule


class _Clock(Callback):
    def __init__(self, warmup: int):
        self.warmup, self.start, self.samples = warmup, None, 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()
        elif self.start is not None:
            self.samples += len(batch["record_id"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_store_arguments(parser)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision", default="32-true")
    args = parser.parse_args()

    run = store_from_args(args)
    encoder = create_encoder(args.encoder)
    module = PretrainModule(encoder.config.to_dict())
    data = WindowDataModule(RunDir(run).store(), batch_size=args.batch_size, num_workers=args.workers,
                            val_fraction=0)
    clock = _Clock(args.warmup)
    trainer = L.Trainer(accelerator=args.accelerator, devices=1, precision=args.precision,
                        max_steps=args.steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[clock],
                        limit_val_batches=0)
    trainer.fit(module, datamodule=data)
    dt = time.perf_counter() - clock.start
    print(f"{args.encoder}, batch {args.batch_size}, {args.precision} on {args.accelerator}: "
          f"{clock.samples / dt:.1f} training samples/s over {args.steps - args.warmup} steps; "
          f"peak RSS {peak_mb():.0f} MiB")


if __name__ == "__main__":
    main()
