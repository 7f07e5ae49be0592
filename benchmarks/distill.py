"""Distil a run's LSTM staging head into a 2-layer MLP on single epoch embeddings.

The teacher is ``RUN_DIR/heads/staging`` (``sleepfm finetune staging``: the LSTM over the night); the
student is :class:`sleepfm.models.heads.MLPHead` fitted with ``.distill(teacher, X)`` on the
teacher's probabilities for the training (+ validation) nights of the same split. Both are scored
by macro-F1 and kappa on the split's held-out test subjects. Latency is the CPU time to stage one
30 s epoch from its embedding (batch of one, one thread, median of many calls) for the student,
and the per-epoch share of a whole-night pass for the teacher (an LSTM needs the night's context).

The student is saved to ``RUN_DIR/heads/staging_student/`` (safetensors + JSON) and the numbers
to ``RUN_DIR/reports/distill.json``.

Example
-------
python benchmarks/distill.py --run runs/demo
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sleepfm.artifacts import load_heads, save_heads  # noqa: E402
from sleepfm.eval.metrics import cohen_kappa, macro_f1  # noqa: E402
from sleepfm.models.heads import MLPHead  # noqa: E402
from sleepfm.rundir import RunDir  # noqa: E402
from sleepfm.splits import read_split  # noqa: E402
from sleepfm.stages.inference import head_features, spectral_kinds  # noqa: E402
from sleepfm.stages.task_data import load_task_data  # noqa: E402


def _median_ms(fn, repeats: int) -> float:
    for _ in range(10):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run directory with heads/staging")
    p.add_argument("--hidden", type=int, default=256, help="student hidden width")
    p.add_argument("--epochs", type=int, default=30, help="student training epochs")
    p.add_argument("--repeats", type=int, default=500, help="latency calls")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    run = RunDir(args.run)
    heads, info = load_heads(run.head_dir("staging"))
    if info["mode"] == "finetune":
        p.error("the staging head was fine-tuned end to end; distillation needs a head on embeddings")
    teacher = heads["staging"]
    split = read_split(run.split_file("staging"))
    n_classes = len(info["classes"])
    data = load_task_data(run, "staging", embedding=info["embedding"], scheme=info["scheme"],
                          record_ids=split["train"] + split["val"] + split["test"],
                          features=head_features(info), spectral_kinds=spectral_kinds(info))
    pos = {r: i for i, r in enumerate(data.record_ids)}
    fit = [data.X[pos[r]] for r in split["train"] + split["val"]]
    X_test = [data.X[pos[r]] for r in split["test"]]
    y_test = [data.y[pos[r]] for r in split["test"]]

    t0 = time.perf_counter()
    student = MLPHead(n_classes=n_classes, hidden=args.hidden, epochs=args.epochs).distill(teacher, fit)
    fit_s = time.perf_counter() - t0

    rows = {}
    for name, head in (("teacher (LSTM)", teacher), ("student (MLP)", student)):
        pred = head.predict(X_test)
        rows[name] = {"macro_f1": macro_f1(y_test, pred, n_classes=n_classes),
                      "kappa": cohen_kappa(y_test, pred, n_classes=n_classes)}
    agree = float(np.mean(np.concatenate(student.predict(X_test)) ==
                          np.concatenate(teacher.predict(X_test))))

    one = X_test[0][:1]
    rows["student (MLP)"]["latency_ms_per_epoch"] = _median_ms(lambda: student.predict_proba(one),
                                                                args.repeats)
    night = X_test[0]
    whole = _median_ms(lambda: teacher.predict_proba(night), max(20, args.repeats // 20))
    rows["teacher (LSTM)"]["latency_ms_per_epoch"] = whole / len(night)
    rows["teacher (LSTM)"]["latency_ms_per_night"] = whole
    # Raw network time of the student, without the estimator's input checks.
    net = student.network_
    x = torch.from_numpy((one - student.mean_) / student.scale_)
    with torch.inference_mode():
        raw = _median_ms(lambda: net(x), args.repeats)
    rows["student (MLP)"]["latency_ms_per_epoch_network_only"] = raw

    save_heads(run.path / "heads" / "staging_student", {"staging": student}, {
        "task": "staging", "mode": "distilled", "scheme": info["scheme"], "classes": info["classes"],
        "embedding": info["embedding"], "encoder_checkpoint": info["encoder_checkpoint"],
        "teacher": str(run.head_dir("staging")), "training_curve": student.history_,
        "split": info["split"]})

    print(f"Distillation on {run.path} ({len(split['test'])} test nights, "
          f"{sum(len(y) for y in y_test)} epochs; student fitted in {fit_s:.1f} s; "
          f"student agrees with teacher on {agree:.1%} of test epochs)\n")
    print("| model | macro-F1 | kappa | CPU latency per epoch (ms) |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        extra = (f" (whole night {r['latency_ms_per_night']:.1f} ms / {len(night)} epochs)"
                 if "latency_ms_per_night" in r else
                 f" (network only {r['latency_ms_per_epoch_network_only']:.3f} ms)")
        print(f"| {name} | {r['macro_f1']:.3f} | {r['kappa']:.3f} | "
              f"{r['latency_ms_per_epoch']:.3f}{extra} |")
    target = rows["student (MLP)"]["latency_ms_per_epoch"] < 10
    print(f"\nstudent latency target < 10 ms per epoch: {'met' if target else 'NOT met'}")
    out = run.path / "reports" / "distill.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "agreement": agree, "fit_s": fit_s,
                               "test_records": split["test"], "args": vars(args)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
