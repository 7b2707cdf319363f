"""Train each candidate encoder on the same data and compare quality, speed and size.

    python scripts/compare_architectures.py \
        --train ../shared/data/tickets/train.csv --train ../shared/data/sentiment/train.csv \
        --dev ../shared/data/tickets/dev.csv --dev ../shared/data/sentiment/dev.csv \
        --work runs/architectures [--archs hybrid,bag,cnn,transformer] \
        [--train-arg=--head-weights=sentiment=0.3 ...] [--card model/]

Every candidate is trained by ``scripts/train.py`` (one seed, the same
options apart from ``--arch``) into ``WORK/<arch>``. Then, for each, the
production path (``connector.classifier``) is timed on single dev tickets
(p50/p99, prepare + tokenize + infer) and on one batch pass over the dev
tickets. Dev macro-F1 comes from the model's own labels.json (the dev set
chose its epoch and calibration, so it is optimistic for all candidates
alike). ``--card`` writes the table into that model's MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import modeling

from connector.classifier import Classifier, TextInput
from connector.cpu import cpu_limit

TRAIN_SCRIPT = Path(__file__).resolve().parent / "train.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, action="append", required=True)
    parser.add_argument("--dev", type=Path, action="append", required=True)
    parser.add_argument("--heads", default="queue,priority,type,sentiment")
    parser.add_argument(
        "--archs",
        default="hybrid,bag,cnn,transformer",
        help="candidates, each an architecture or NAME=ARCH (a variant with its own --arch-arg)",
    )
    parser.add_argument("--work", type=Path, required=True, help="directory for the models")
    parser.add_argument(
        "--train-arg",
        action="append",
        default=[],
        help="extra train.py argument for every candidate (repeatable): --train-arg=--epochs=10",
    )
    parser.add_argument(
        "--arch-arg",
        action="append",
        default=[],
        help="extra train.py argument for one candidate, by name (repeatable): "
        "transformer:--epochs=4",
    )
    parser.add_argument("--single-runs", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--reuse", action="store_true", help="keep candidates already trained")
    parser.add_argument(
        "--card", type=Path, default=None, help="model directory whose card to update"
    )
    return parser


def train(name: str, arch: str, args: argparse.Namespace) -> tuple[Path, float]:
    output = args.work / name
    if args.reuse and (output / "manifest.json").is_file():
        # The card train.py wrote records the wall time of the earlier run.
        card = (output / modeling.CARD_FILE).read_text(encoding="utf-8")
        match = re.search(r"Wall time: (\d+) s", card)
        return output, float(match.group(1)) if match else float("nan")
    command = [sys.executable, str(TRAIN_SCRIPT), "--arch", arch, "--heads", args.heads]
    for path in args.train:
        command += ["--train", str(path)]
    for path in args.dev:
        command += ["--dev", str(path)]
    own = [a.split(":", 1)[1] for a in args.arch_arg if a.split(":", 1)[0] == name]
    command += [*args.train_arg, *own, "--output", str(output), "--quiet"]
    if args.threads:
        command += ["--threads", str(args.threads)]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return output, time.perf_counter() - started


def dev_texts(paths: Sequence[Path], heads: Sequence[str]) -> list[TextInput]:
    rows: list[TextInput] = []
    for path in paths:
        for row in modeling.read_rows(path, heads, max_chars=20_000, limit=None):
            rows.append(TextInput(subject="", body=row.text))
    return rows


def speed(model_dir: Path, texts: Sequence[TextInput], runs: int, threads: int) -> dict[str, Any]:
    classifier = Classifier.load(model_dir, threads=threads)
    for item in texts[:20]:
        classifier.predict([item])
    timings = []
    for i in range(runs):
        item = texts[i % len(texts)]
        started = time.perf_counter()
        classifier.predict([item])
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    started = time.perf_counter()
    classifier.predict(texts)
    batch_seconds = time.perf_counter() - started
    return {
        "p50_ms": statistics.median(timings),
        "p99_ms": timings[min(len(timings) - 1, int(0.99 * len(timings)))],
        "batch_per_second": len(texts) / batch_seconds,
        "onnx_mb": (model_dir / "model.onnx").stat().st_size / 2**20,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    heads = [h for h in args.heads.split(",") if h]
    threads = args.threads or cpu_limit()
    texts = dev_texts(args.dev, heads)
    results = []
    for candidate in [a for a in args.archs.split(",") if a]:
        name, _, arch = candidate.partition("=")
        arch = arch or name
        print(f"training {name} ...", flush=True)
        model_dir, seconds = train(name, arch, args)
        labels = json.loads((model_dir / "labels.json").read_text(encoding="utf-8"))
        dev = labels["training"]["dev"]
        figures = speed(model_dir, texts, args.single_runs, threads)
        results.append({"arch": name, "train_seconds": seconds, "dev": dev, **figures})
        print(json.dumps(results[-1], default=str), flush=True)
    (args.work / "architectures.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    header = [
        "arch",
        *[f"{h} F1" for h in heads],
        "p50 ms",
        "p99 ms",
        "batch/s",
        "ONNX MB",
        "train s",
    ]
    rows = [
        [
            r["arch"],
            *[r["dev"][h].get("macro_f1", "-") for h in heads],
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['batch_per_second']:.0f}",
            f"{r['onnx_mb']:.1f}",
            f"{r['train_seconds']:.0f}",
        ]
        for r in results
    ]
    command = "python scripts/compare_architectures.py " + " ".join(
        [a for p in args.train for a in ("--train", str(p))]
        + [a for p in args.dev for a in ("--dev", str(p))]
        + [f"--train-arg={a}" for a in args.train_arg]
        + [f"--arch-arg={a}" for a in args.arch_arg]
        + ["--archs", args.archs, "--work", str(args.work), "--threads", str(threads)]
    )
    markdown = "\n".join(
        [
            "## Architecture comparison (generated by scripts/compare_architectures.py)",
            "",
            f"- Command: `{command}`",
            f"- Machine: {modeling.machine_description().get('cpu', 'unknown CPU')}, "
            f"{threads} inference threads; one seed per candidate, dev macro-F1 "
            "(optimistic for all alike: dev chose the epoch and calibration)",
            "",
            modeling.markdown_table(header, rows),
        ]
    )
    print(markdown)
    (args.work / "architectures.md").write_text(markdown + "\n", encoding="utf-8")
    if args.card:
        modeling.update_card(args.card, "architectures", markdown)
        print(f"updated {args.card / modeling.CARD_FILE} and its manifest")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
