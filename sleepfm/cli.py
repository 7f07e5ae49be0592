"""The ``sleepfm`` command: one sub-command per pipeline stage (mirroring the notebooks)."""
from __future__ import annotations

import argparse
import logging
import sys
import warnings
from dataclasses import fields
from pathlib import Path

import yaml

from . import __version__
from .exceptions import SleepFMError

logger = logging.getLogger("sleepfm")


def _load_config(cls, path: str | None, **overrides):
    """A config dataclass from YAML (unknown keys are an error) plus command-line overrides."""
    values = {}
    if path:
        values = yaml.safe_load(Path(path).read_text()) or {}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SystemExit(f"{path}: unknown settings {unknown}; known: {sorted(known)}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**values)


def cmd_preprocess(args) -> int:
    from .channels import ChannelMap
    from .preprocess import PreprocessConfig, preprocess_directory

    config = _load_config(PreprocessConfig, args.config,
                          on_truncated="warn" if args.allow_truncated else None)
    cmap = ChannelMap.from_yaml(args.channel_map) if args.channel_map else None
    batch = preprocess_directory(args.input, args.out, labels_dir=args.labels, config=config,
                                 channel_map=cmap, workers=args.workers, progress=not args.quiet)
    for r in batch.failed:
        print(f"FAILED {r.source}: {r.reason}", file=sys.stderr)
    for path in batch.unmatched_labels:
        print(f"label file matches no recording: {path}", file=sys.stderr)
    for r in batch.ok:
        if r.unplaced:
            print(f"{r.record_id}: unplaced channels skipped: {', '.join(r.unplaced)}")
        for name, why in r.dropped.items():
            print(f"{r.record_id}: channel {name!r} dropped: {why}")
    print(batch.summary)
    return 1 if batch.failed else 0


def cmd_pretrain(args) -> int:
    from .train.pretrain import PretrainConfig, pretrain

    config = _load_config(PretrainConfig, args.config, devices=args.devices, num_nodes=args.num_nodes,
                          accelerator=args.accelerator, strategy=args.strategy,
                          precision=args.precision, accumulate=args.accumulate,
                          max_epochs=args.max_epochs, batch_size=args.batch_size,
                          num_workers=args.workers)
    path = pretrain(args.run, config, resume=not args.restart, progress=not args.quiet)
    print(f"encoder saved to {path}")
    return 0


def cmd_embed(args) -> int:
    from .train.embed import embed_run

    status = embed_run(args.run, checkpoint=args.checkpoint, batch_size=args.batch_size,
                       device=args.device, num_workers=args.workers, keep_tokens=args.tokens,
                       progress=not args.quiet, overwrite=args.overwrite)
    failed = {k: v for k, v in status.items() if v not in ("ok", "skipped")}
    for rid, why in failed.items():
        print(f"SKIPPED {rid}: {why}", file=sys.stderr)
    done = sum(v == "ok" for v in status.values())
    skipped = sum(v == "skipped" for v in status.values())
    print(f"{done} embedded, {skipped} already done, {len(failed)} without usable modalities")
    return 0


def cmd_demo(args) -> int:
    """The end-to-end pipeline on a data folder: preprocess → pretrain → embed."""
    from .train.embed import embed_run
    from .train.pretrain import PretrainConfig, pretrain

    run = Path(args.run)
    pre = argparse.Namespace(input=args.data, out=str(run), labels=None, config=None, channel_map=None,
                             allow_truncated=False, workers=args.workers, quiet=args.quiet)
    if cmd_preprocess(pre) != 0:
        print("demo: some recordings failed to preprocess; continuing with the others", file=sys.stderr)
    config = PretrainConfig(encoder=args.encoder, max_epochs=args.epochs, batch_size=8,
                            val_fraction=0.25, patience=0)
    encoder_dir = pretrain(run, config, progress=not args.quiet)
    status = embed_run(run, checkpoint=encoder_dir, progress=not args.quiet)
    print(f"embedded {sum(v in ('ok', 'skipped') for v in status.values())} records")
    print(f"run directory: {run.resolve()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sleepfm", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sleepfm {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("preprocess", help="EDF/BDF folder → RUN_DIR/hdf5 (128 Hz) + RUN_DIR/labels")
    p.add_argument("input", help="folder of EDF/BDF recordings (searched recursively)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--labels", help="folder of label files (default: beside the recordings)")
    p.add_argument("--config", help="YAML with PreprocessConfig settings")
    p.add_argument("--channel-map", help="YAML extending the channel alias table")
    p.add_argument("--workers", type=int, default=1, help="parallel processes")
    p.add_argument("--allow-truncated", action="store_true",
                   help="read truncated EDFs up to their last complete record instead of failing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("pretrain", help="self-supervised pre-training on RUN_DIR/hdf5 (Lightning)")
    p.add_argument("--run", required=True, help="run directory (after `sleepfm preprocess`)")
    p.add_argument("--config", help="YAML with PretrainConfig settings")
    p.add_argument("--devices", help="Lightning devices (e.g. 1, 4, auto)")
    p.add_argument("--num-nodes", type=int)
    p.add_argument("--accelerator", help="cpu, gpu, auto")
    p.add_argument("--strategy", help="auto, ddp, ddp_spawn, ...")
    p.add_argument("--precision", help="32-true, bf16-mixed, 16-mixed")
    p.add_argument("--accumulate", type=int, help="gradient accumulation batches")
    p.add_argument("--max-epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--workers", type=int, help="DataLoader worker processes")
    p.add_argument("--restart", action="store_true", help="ignore an existing last.ckpt")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("embed", help="RUN_DIR/hdf5 → RUN_DIR/embeddings (per epoch, window, night)")
    p.add_argument("--run", required=True)
    p.add_argument("--checkpoint", help="encoder directory (default: RUN_DIR/checkpoints/encoder)")
    p.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    p.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast on cuda)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--tokens", action="store_true", help="also keep the 5 s token embeddings")
    p.add_argument("--overwrite", action="store_true", help="re-embed records already done")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("demo", help="run the whole pipeline on a data folder (data_samples/)")
    p.add_argument("--data", default="data_samples")
    p.add_argument("--run", default="runs/demo")
    p.add_argument("--encoder", default="sleepfm_base", help="registered encoder name")
    p.add_argument("--epochs", type=int, default=3, help="pre-training epochs")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose < 2:  # Lightning's start-up banners and tips
        for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
            logging.getLogger(name).setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
    try:
        return args.func(args)
    except SleepFMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
