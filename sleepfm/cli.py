"""The ``sleepfm`` command: one sub-command per pipeline stage (mirroring the notebooks)."""
from __future__ import annotations

import argparse
import logging
import sys
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


def cmd_demo(args) -> int:
    """The end-to-end pipeline on a data folder (today: preprocessing)."""
    run = Path(args.run)
    pre = argparse.Namespace(input=args.data, out=str(run), labels=None, config=None, channel_map=None,
                             allow_truncated=False, workers=args.workers, quiet=args.quiet)
    code = cmd_preprocess(pre)
    print(f"run directory: {run.resolve()}")
    return code


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

    p = sub.add_parser("demo", help="run the whole pipeline on a data folder (data_samples/)")
    p.add_argument("--data", default="data_samples")
    p.add_argument("--run", default="runs/demo")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except SleepFMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
