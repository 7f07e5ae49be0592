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


def cmd_finetune(args) -> int:
    from .train.finetune import FinetuneConfig, finetune_run

    config = FinetuneConfig(
        mode=args.mode, scheme=args.scheme, embedding=args.embedding,
        label_fraction=args.label_fraction, shots=args.shots, shot_unit=args.shot_unit,
        test_size=args.test_size, val_size=args.val_size, seed=args.seed,
        bidirectional=args.bidirectional, epochs=args.epochs, hidden=args.hidden, lr=args.lr,
        batch_size=args.batch_size, skip_unlabelled=args.skip_unlabelled, device=args.device)
    try:
        result = finetune_run(args.run, args.task, config, split=args.split)
    except ValueError as err:
        if isinstance(err, SleepFMError):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    for rid, why in result.info["skipped"].items():
        print(f"SKIPPED {rid}: {why}", file=sys.stderr)
    score = "" if result.val_score is None else f"; validation score {result.val_score:.3f}"
    print(f"{args.task} head ({args.mode}) trained on {len(result.train_records)} nights of "
          f"{result.info['n_train_subjects']} subjects{score}; saved to {result.directory}")
    return 0


def cmd_evaluate(args) -> int:
    from .eval.evaluate import evaluate_run

    result = evaluate_run(args.run, args.task, n_boot=args.n_boot, seed=args.seed)
    print(f"{args.task}: {result.metrics['n_test_nights']} test nights of "
          f"{result.metrics['n_test_subjects']} subjects")
    for row in result.summary.itertuples():
        print(f"  {row.metric:<28} {row.value:.3f}  [{row.ci_low:.3f}, {row.ci_high:.3f}]")
    print(f"reports written to {result.directory}")
    return 0


def cmd_predict(args) -> int:
    from .predict import predict_edf

    frame = predict_edf(args.edf, args.run, args.out, keep_work_dir=args.keep_work_dir)
    counts = frame["StageName"].value_counts().to_dict()
    print(f"{len(frame)} epochs staged → {args.out} ({counts})")
    return 0


def cmd_demo(args) -> int:
    """The end-to-end pipeline on a data folder: preprocess → pretrain → embed → staging and event
    heads → evaluation on held-out subjects."""
    from .eval.evaluate import evaluate_run
    from .train.embed import embed_run
    from .train.finetune import FinetuneConfig, finetune_run
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
    for task, mode in (("staging", "lstm"), ("events", "linear")):
        finetune_run(run, task, FinetuneConfig(mode=mode, skip_unlabelled=True))
        result = evaluate_run(run, task, n_boot=args.n_boot)
        print(f"{task} on {result.metrics['n_test_nights']} held-out night(s): " + ", ".join(
            f"{row.metric} {row.value:.2f}" for row in result.summary.head(3).itertuples()))
    print("note: held-out metrics on a handful of short recordings are a smoke test, not a result; "
          "benchmarks/staging_compare.py measures on a cohort")
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

    p = sub.add_parser("finetune", help="train a staging or events head on RUN_DIR/embeddings")
    p.add_argument("task", choices=["staging", "events"])
    p.add_argument("--run", required=True, help="run directory (after `sleepfm embed`)")
    p.add_argument("--mode", default="lstm", choices=["lstm", "linear", "fewshot", "finetune"],
                   help="lstm/linear head on frozen embeddings, fewshot, or finetune (encoder "
                        "unfrozen, end to end)")
    p.add_argument("--scheme", default="aasm5", choices=["aasm5", "osf4"])
    p.add_argument("--embedding", default="fused", help="fused or a modality (BAS, ECG, EMG, RESP)")
    p.add_argument("--label-fraction", type=float, default=1.0,
                   help="fraction of training subjects whose labels are used")
    p.add_argument("--shots", type=int, help="few-shot size (--mode fewshot)")
    p.add_argument("--shot-unit", default="nights", choices=["nights", "epochs"],
                   help="--shots counts nights, or labelled epochs per class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-size", type=float, default=0.2, help="fraction of subjects for testing")
    p.add_argument("--val-size", type=float, default=0.1,
                   help="fraction of subjects for early stopping")
    p.add_argument("--split", help="reuse this split.json instead of making a new one")
    p.add_argument("--bidirectional", action="store_true", help="bidirectional LSTM")
    p.add_argument("--epochs", type=int, help="training epochs of the head")
    p.add_argument("--hidden", type=int, help="hidden size of the head")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--batch-size", type=int, default=8, help="windows per step (--mode finetune)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-unlabelled", action="store_true",
                   help="leave out records without usable labels (reported) instead of failing")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="score a head on its held-out test subjects → RUN_DIR/reports")
    p.add_argument("task", choices=["staging", "events"])
    p.add_argument("--run", required=True)
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of subjects")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="stage a new EDF with a run's encoder and staging head")
    p.add_argument("edf", help="EDF/BDF recording")
    p.add_argument("--run", required=True, help="run with checkpoints/encoder and heads/staging")
    p.add_argument("--out", required=True, help="hypnogram CSV to write")
    p.add_argument("--keep-work-dir", action="store_true",
                   help="keep the temporary preprocessed store and embeddings")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("demo", help="run the whole pipeline on a data folder (data_samples/)")
    p.add_argument("--data", default="data_samples")
    p.add_argument("--run", default="runs/demo")
    p.add_argument("--encoder", default="sleepfm_base", help="registered encoder name")
    p.add_argument("--epochs", type=int, default=3, help="pre-training epochs")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the CIs")
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
