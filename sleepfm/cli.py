"""The ``sleepfm`` command: one sub-command per pipeline stage (mirroring the notebooks).

Each sub-command's settings are the fields of its config dataclass (:mod:`sleepfm.config`): every
field is an option, and ``--config FILE`` reads them from YAML (options given on the command line
win). A user's mistake ends in one line that names the problem and the remedy, and a non-zero
exit status: 2 for an error, 1 when some recordings of a batch failed.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import sys
import warnings
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import sleepfm

from ._version import __version__
from .checkpoint import read_record
from .config import (
    BenchConfig,
    DashboardConfig,
    DemoConfig,
    DiseaseConfig,
    DiseaseEvaluateConfig,
    EmbedConfig,
    EvaluateConfig,
    FinetuneConfig,
    PredictConfig,
    PreprocessConfig,
    PretrainConfig,
    cli_options,
    load_config,
)
from .exceptions import InvalidParameterError, SleepFMError
from .vocab import EPOCH_TASKS

logger = logging.getLogger("sleepfm")


def _settings(args, cls: type, **fixed):
    """The sub-command's config: ``--config`` YAML, then the options given, then ``fixed``."""
    given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    return load_config(cls, args.config, **{**given, **fixed})


# --------------------------------------------------------------------------------------------
# sub-commands
# --------------------------------------------------------------------------------------------
def cmd_preprocess(args) -> int:
    batch = sleepfm.preprocess_directory(args.input, args.out, _settings(args, PreprocessConfig),
                                         labels_dir=args.labels, progress=not args.quiet)
    for r in batch.ok:
        if r.unplaced:
            print(f"{r.record_id}: unplaced channels skipped: {', '.join(r.unplaced)}")
        for name, why in r.dropped.items():
            print(f"{r.record_id}: channel {name!r} dropped: {why}")
    print(batch.summary)
    return 1 if batch.failed else 0


def cmd_pretrain(args) -> int:
    path = sleepfm.pretrain(args.run, _settings(args, PretrainConfig), resume=not args.restart,
                            progress=not args.quiet)
    print(f"encoder saved to {path}")
    return 0


def cmd_embed(args) -> int:
    status = sleepfm.embed(args.run, _settings(args, EmbedConfig), checkpoint=args.checkpoint,
                           progress=not args.quiet)
    done = sum(v in ("ok", "updated") for v in status.values())
    updated = sum(v == "updated" for v in status.values())
    skipped = sum(v == "skipped" for v in status.values())
    again = f" ({updated} of them out of date)" if updated else ""
    print(f"{done} embedded{again}, {skipped} already done, {len(status) - done - skipped} "
          "without usable modalities")
    return 0


def cmd_finetune(args) -> int:
    result = sleepfm.finetune(args.run, args.task, _settings(args, FinetuneConfig),
                              split=args.split)
    score = "" if result.val_score is None else f"; validation score {result.val_score:.3f}"
    chosen = (result.info.get("selection") or {}).get("chosen")
    mode = f"{result.mode}: {chosen}" if chosen else f"{result.mode}, {result.info['features']}"
    print(f"{args.task} head ({mode}) trained on {len(result.train_records)} nights of "
          f"{result.info['n_train_subjects']} subjects{score}; saved to {result.directory}")
    return 0


def cmd_finetune_disease(args) -> int:
    result = sleepfm.finetune(args.run, "disease", _settings(args, DiseaseConfig),
                              split=args.split)
    info = result.info
    scores = ", ".join(f"{name} {v:.3f}" for name, v in info["val_scores"].items())
    print(f"disease head ({result.mode}) on {len(info['phenotypes'])} phenotypes trained on "
          f"{len(result.train_records)} nights of {info['n_train_subjects']} subjects"
          f"{'; validation mean C-index: ' + scores if scores else ''}; saved to "
          f"{result.directory}")
    for line in info["data_report"]:
        print(f"note: {line}")
    return 0


def _print_disease(result) -> None:
    m = result.metrics
    print(f"disease: {m['n_test_nights']} test nights of {m['n_test_subjects']} subjects, "
          f"horizon {m['horizon']:g} y, {m['n_boot']} bootstrap resamples")
    s = result.summary
    for row in s[s.metric == "c_index"].itertuples():
        print(f"  {row.model:<16} {row.phenotype:<24} C-index {row.value:6.3f}  "
              f"[{row.ci_low:.3f}, {row.ci_high:.3f}]  q={row.q_value:.3g}")


def cmd_evaluate(args) -> int:
    if args.task == "disease":
        result = sleepfm.evaluate(args.run, "disease", _settings(args, DiseaseEvaluateConfig))
        _print_disease(result)
        print(f"reports written to {result.directory}")
        return 0
    result = sleepfm.evaluate(args.run, args.task, _settings(args, EvaluateConfig))
    print(f"{args.task}: {result.metrics['n_test_nights']} test nights of "
          f"{result.metrics['n_test_subjects']} subjects")
    for row in result.summary.itertuples():
        print(f"  {row.metric:<28} {row.value:.3f}  [{row.ci_low:.3f}, {row.ci_high:.3f}]")
    print(f"reports written to {result.directory}")
    return 0


def cmd_predict(args) -> int:
    settings = _settings(args, PredictConfig)
    if Path(args.input).is_dir():
        if args.age is not None or args.sex is not None:
            raise InvalidParameterError("--age/--sex are for one recording; for a folder give "
                                        "--demographics CSV.")
        batch = sleepfm.predict_directory(args.input, args.run, args.out, settings,
                                          weights=args.weights, demographics=args.demographics,
                                          progress=not args.quiet)
        print(batch.summary)
        return 1 if batch.failed else 0
    if args.demographics is not None:
        raise InvalidParameterError("--demographics is for a folder; for one recording give "
                                    "--age and --sex.")
    frame = sleepfm.predict(args.input, args.run, args.out, settings, weights=args.weights,
                            age=args.age, sex=args.sex)
    counts = frame["StageName"].value_counts().to_dict()
    print(f"{len(frame)} epochs staged → {args.out} ({counts})")
    if "risks" in frame.attrs:
        top = frame.attrs["risks"].nsmallest(5, "rank")
        print("highest phenotype risks (log-hazard): " + "; ".join(
            f"{name} {value:+.2f}" for name, value in zip(top["phenotype"], top["log_hazard"])))
    return 0


def _ci(value, low, high) -> str:
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def _print_demo_disease(ev) -> None:
    m, s, e = ev.metrics, ev.summary, ev.enrichment
    print(f"disease on {m['n_test_subjects']} held-out subjects of the SYNTHETIC cohort "
          f"(horizon {m['horizon']:g} y; C-index with 95 % CI; EF20 = enrichment factor of "
          "recruiting the riskiest 20 %):")
    print(f"  {'phenotype':<14} {'Cox head':<21} {'demographics baseline':<22} "
          f"{'head - baseline':<23} EF20 head / baseline")
    c = s[s.metric == "c_index"].set_index(["model", "phenotype"])
    top = e[e["quantile"].round(6) == 0.2].set_index(["model", "phenotype"]) if len(e) else e
    for p in m["phenotypes"]:
        cells = [_ci(*c.loc[(model, p), ["value", "ci_low", "ci_high"]])
                 if (model, p) in c.index else "-" for model in ("head", "baseline",
                                                                   "head - baseline")]
        ef = " / ".join(f"{top.loc[(model, p), 'enrichment']:.2f}x" if (model, p) in top.index
                        else "-" for model in ("head", "baseline"))
        print(f"  {p:<14} {cells[0]:<21} {cells[1]:<22} {cells[2]:<23} {ef}")
    print("  the cohort is synthetic: these figures say how well the pipeline recovers a known "
          "hazard, not how it does on patients")


def cmd_bench(args) -> int:
    result = sleepfm.bench(args.run, _settings(args, BenchConfig), progress=not args.quiet)
    main = result.table[(result.table["condition"] == "all") & (result.table["split"] == "held_out")
                        & result.table["labels"].isin(["100%", "shipped"])
                        & (result.table["pretrain_fraction"].fillna(1.0) == 1.0)]
    if len(main):
        table = main.pivot_table(index=["method", "setting"], columns="task", values="auroc",
                                 aggfunc="first")
        print("macro AUROC, all leads, held-out subjects:")
        print(table.round(3).to_string())
    print(f"{len(result.table)} rows; report: {result.report_dir / 'results.md'}")
    return 0


def cmd_import_sleepfm_clinical(args) -> int:
    out = sleepfm.import_sleepfm_clinical(args.src, args.out)
    manifest = json.loads((out / sleepfm.PUBLISHED_MANIFEST).read_text())
    for part, made in manifest["models"].items():
        where = out / part
        print(f"{part}: {made.get('file', 'kept')} → {where}")
    table = manifest.get("channel_table")
    if table:
        print(f"channel table: {table['new_aliases']} names added to sleepfm's aliases "
              f"({table['known']} already placed alike, {len(table['disagreements'])} placed "
              f"as the reference does: {', '.join(table['disagreements']) or 'none'}) → "
              f"{out / sleepfm.PUBLISHED_CHANNEL_MAP}")
    print(f"licence: {manifest['licence']}")
    return 0


def cmd_import_weights(args) -> int:
    path = sleepfm.import_osf_weights(args.payload, args.out)
    record = read_record(path, kind="encoder")
    config = record["config"]
    print(f"OSF backbone (ViT-1D, width {config['width']}, {config['depth']} blocks, "
          f"lead_wise={config['lead_wise']}, {record['num_parameters']:,} parameters) imported "
          f"from {args.payload} to {path}")
    return 0


def cmd_dashboard(args) -> int:
    return sleepfm.serve_dashboard(args.run, _settings(args, DashboardConfig))


def cmd_demo(args) -> int:
    settings = _settings(args, DemoConfig)
    result = sleepfm.demo(args.data, args.run, settings, progress=not args.quiet)
    print(f"{args.data}: {result.batch.summary}")
    if result.cohort_batch is not None:
        print(f"synthetic cohort: {result.cohort_batch.summary}")
    print(f"embedded {sum(v in ('ok', 'updated', 'skipped') for v in result.embedded.values())} "
          "records")
    for task, ev in result.evaluations.items():
        if task == "disease":
            _print_demo_disease(ev)
            continue
        print(f"{task} on {ev.metrics['n_test_nights']} held-out nights of "
              f"{ev.metrics['n_test_subjects']} subjects: " + ", ".join(
                  f"{row.metric} {_ci(row.value, row.ci_low, row.ci_high)}"
                  for row in ev.summary.head(3).itertuples()))
    print(f"reports: {result.run.report_dir('staging').parent.resolve()}")
    print(f"run directory: {result.run.path.resolve()}")
    if settings.dashboard:
        return sleepfm.serve_dashboard(result.run)
    return 0


# --------------------------------------------------------------------------------------------
# the parser, built from the config dataclasses
# --------------------------------------------------------------------------------------------
def _typed(parse):
    """An argparse ``type`` whose error is the config's own message."""

    def convert(text: str):
        try:
            return parse(text)
        except InvalidParameterError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return convert


def _add_settings(parser: argparse.ArgumentParser, cls: type) -> None:
    parser.add_argument("--config", metavar="YAML", help=f"YAML file with {cls.__name__} settings")
    group = parser.add_argument_group(f"settings (fields of {cls.__name__}, also in --config)")
    for opt in cli_options(cls):
        choices = f"; one of {', '.join(map(str, opt.choices))}" if opt.choices else ""
        default = "" if opt.default in (None, {}) else f" (default: {opt.default})"
        common = dict(dest=opt.dest, default=argparse.SUPPRESS, help=opt.help + choices + default)
        if opt.is_bool:
            group.add_argument(opt.flag, action=argparse.BooleanOptionalAction, **common)
        else:
            group.add_argument(opt.flag, type=_typed(opt.parse), metavar=opt.dest.upper(), **common)
        if opt.const:
            flag, value, text = opt.const
            group.add_argument(flag, dest=opt.dest, action="store_const", const=value,
                               default=argparse.SUPPRESS, help=text)


def _command(sub, name: str, func, help: str, settings: type | None = None, *,
             quiet: bool = True) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    p.set_defaults(func=func)
    if quiet:
        p.add_argument("--quiet", action="store_true", help="no progress bar")
    if settings is not None:
        _add_settings(p, settings)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sleepfm", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"sleepfm {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = _command(sub, "preprocess", cmd_preprocess, "EDF/BDF folder → RUN_DIR/hdf5 (128 Hz) + "
                 "RUN_DIR/labels", PreprocessConfig)
    p.add_argument("input", help="folder of EDF/BDF recordings (searched recursively)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--labels", help="folder of label files (default: beside the recordings)")

    p = _command(sub, "pretrain", cmd_pretrain, "self-supervised pre-training on RUN_DIR/hdf5 "
                 "(Lightning)", PretrainConfig)
    p.add_argument("--run", required=True, help="run directory (after `sleepfm preprocess`)")
    p.add_argument("--restart", action="store_true", help="ignore an existing last.ckpt")

    p = _command(sub, "embed", cmd_embed, "RUN_DIR/hdf5 → RUN_DIR/embeddings (per epoch, window, "
                 "night)", EmbedConfig)
    p.add_argument("--run", required=True, help="run directory (after `sleepfm pretrain`)")
    p.add_argument("--checkpoint", help="encoder directory (default: RUN_DIR/checkpoints/encoder)")

    p = sub.add_parser("finetune", help="train a head on RUN_DIR/embeddings (staging, events, "
                       "disease)", description="train a head on RUN_DIR/embeddings")
    tasks = p.add_subparsers(dest="task", required=True, metavar="{staging,events,disease}")
    for task in EPOCH_TASKS:
        q = _command(tasks, task, cmd_finetune, f"train the {task} head", FinetuneConfig,
                     quiet=False)
        q.add_argument("--run", required=True, help="run directory (after `sleepfm embed`)")
        q.add_argument("--split", help="reuse this split.json instead of making a new one")
    q = _command(tasks, "disease", cmd_finetune_disease, "Cox heads of future disease from "
                 "outcome tables (--outcomes DIR)", DiseaseConfig, quiet=False)
    q.add_argument("--run", required=True, help="run directory (after `sleepfm embed`)")
    q.add_argument("--split", help="reuse this split.json instead of making a new one")

    p = sub.add_parser("evaluate", help="score a head on its held-out test subjects → "
                       "RUN_DIR/reports", description="score a head on its held-out test subjects")
    tasks = p.add_subparsers(dest="task", required=True, metavar="{staging,events,disease}")
    for task, settings in ((*[(t, EvaluateConfig) for t in EPOCH_TASKS],
                            ("disease", DiseaseEvaluateConfig))):
        q = _command(tasks, task, cmd_evaluate, f"score the {task} head", settings, quiet=False)
        q.add_argument("--run", required=True, help="run directory (after `sleepfm finetune`)")

    p = _command(sub, "bench", cmd_bench, "compare pre-training objectives on a run's scored "
                 "nights (linear probe, fine-tuning, few-shot, missing leads) → "
                 "RUN_DIR/reports/bench", BenchConfig)
    p.add_argument("--run", required=True, help="run directory (after `sleepfm preprocess`)")

    p = _command(sub, "predict", cmd_predict, "stage new EDF/BDF recordings with a run's "
                 "encoder and staging head (streaming; a folder gives one CSV per recording)",
                 PredictConfig)
    p.add_argument("input", metavar="EDF_OR_FOLDER",
                   help="EDF/BDF recording, or a folder of them (searched recursively)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="run with checkpoints/encoder and heads/staging")
    which.add_argument("--weights", help="SleepFM's published weights, as `sleepfm "
                       "import-weights sleepfm-clinical` wrote them")
    p.add_argument("--out", required=True, help="hypnogram CSV to write; for a folder, the "
                   "folder that gets <record_id>.csv per recording")
    p.add_argument("--age", type=float, help="with --weights: the subject's age in years (with "
                   "--sex: the 1,065 phenotype risks go to <out>.risks.csv)")
    p.add_argument("--sex", help="with --weights: the subject's sex (M/F)")
    p.add_argument("--demographics", help="with --weights and a folder: CSV of 'Study ID' "
                   "(record id), age, gender; risks go to OUT_DIR/<record_id>.risks.csv")

    p = sub.add_parser("import-weights", help="a published checkpoint → an encoder directory "
                       "(safetensors + config.json)", description="import a published "
                       "checkpoint as a sleepfm encoder")
    sources = p.add_subparsers(dest="source", required=True, metavar="{osf,sleepfm-clinical}")
    q = _command(sources, "osf", cmd_import_weights, "OSF's released ViT-1D backbone "
                 "(osf_backbone.pth: metadata + state_dict, read without unpickling)", quiet=False)
    q.add_argument("payload", help="the OSF payload (.pth)")
    q.add_argument("--out", required=True, help="encoder directory to write (e.g. "
                   "RUN_DIR/checkpoints/encoder)")
    q = _command(sources, "sleepfm-clinical", cmd_import_sleepfm_clinical, "SleepFM's released "
                 "encoder, staging and diagnosis models (zou-group/sleepfm-clinical, read "
                 "without unpickling) and its channel table", quiet=False)
    q.add_argument("src", help="the reference's sleepfm/checkpoints/ folder, or one model "
                   "folder in it")
    q.add_argument("--out", required=True, help="folder to write: encoder/, staging/, "
                   "diagnosis/, channel_map.yaml, weights.json")

    p = _command(sub, "demo", cmd_demo, "run the whole pipeline on a data folder "
                 "(data_samples/)", DemoConfig)
    p.add_argument("--data", default="data_samples", help="folder of recordings (default: "
                   "data_samples)")
    p.add_argument("--run", default="runs/demo", help="run directory (default: runs/demo)")

    p = _command(sub, "dashboard", cmd_dashboard, "the Streamlit dashboard on a run directory "
                 "(read-only; 127.0.0.1 unless --address)", DashboardConfig, quiet=False)
    p.add_argument("run", help="run directory")
    return parser


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------
class _StderrHandler(logging.StreamHandler):
    """Log records to whatever ``sys.stderr`` is when they are emitted."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


@contextlib.contextmanager
def _reporting(verbose: int) -> Iterator[None]:
    """For one command: sleepfm's log records and Python warnings on stderr, one line each."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s" if verbose == 0 else
                                           "%(levelname)s %(name)s: %(message)s"))
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    quiet_lightning = [logging.getLogger(f"lightning.{name}.utilities.rank_zero")
                       for name in ("pytorch", "fabric")] if verbose < 2 else []
    lightning_levels = [lg.level for lg in quiet_lightning]
    for lg in quiet_lightning:  # start-up banners and tips
        lg.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
        warnings.showwarning = lambda message, *_, **__: print(f"warning: {message}",
                                                               file=sys.stderr)
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
            for lg, lvl in zip(quiet_lightning, lightning_levels):
                lg.setLevel(lvl)


def _os_error(err: OSError) -> str:
    where = f"{err.filename}: " if err.filename else ""
    return (f"{where}{err.strerror or err}; check that the path exists, is a directory where one "
            "is expected, and is writable.")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (usage errors exit 2 through argparse)."""
    args = build_parser().parse_args(argv)
    with _reporting(args.verbose):
        try:
            return args.func(args)
        except SleepFMError as err:
            print(f"error: {err}", file=sys.stderr)
        except OSError as err:
            print(f"error: {_os_error(err)}", file=sys.stderr)
        except KeyboardInterrupt:
            print("interrupted; run the same command again to resume", file=sys.stderr)
            return 130
    return 2


def entry() -> None:
    """The ``sleepfm`` command: :func:`main`, exiting with its status. The objects still alive
    are frozen first (:func:`gc.freeze`), so the interpreter's last garbage collection skips
    them: with PyTorch loaded, that pass alone takes about half a second."""
    status = main()
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    entry()
