"""Benchmark the classifier: latency, throughput, memory, and two PyTorch references.

    python scripts/benchmark_classifier.py --model model/ --tickets ../shared/data/tickets/test.csv

Measured in one run, on the same ticket texts (subject + body from the CSV,
capped at the model's max tokens):

1. single-ticket latency p50/p99 through ``connector.classifier`` (text
   preparation, tokenize, infer), one ticket per call;
2. batch throughput through the same path (``predict`` on all tickets at once);
3. resident memory (RSS and peak) of a child process that loads the model and
   classifies a few tickets, read from /proc/self/status in that child;
4. the same model in PyTorch eager (weights read back from the ONNX file);
5. a BERT-base-sized encoder in PyTorch eager (12 layers, hidden 768, 12 heads,
   FFN 3072, vocabulary 30,522, randomly initialised with ``torch.nn``; nothing
   downloaded) on the same token sequences, with the same tokenizer cost.

Prints the machine, thread settings, the command and the ratios; writes JSON
and Markdown with ``--output``, and the model card's benchmark section with ``--card``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import modeling

from connector.classifier import Classifier, TextInput, pad
from connector.cpu import cpu_limit
from connector.word_features import pad_features

BERT_BASE = {
    "vocab": 30_522,
    "hidden": 768,
    "layers": 12,
    "heads": 12,
    "ffn": 3072,
    "positions": 512,
}

# Run in a fresh interpreter: import, load, classify, report memory. Nothing else is loaded.
_MEMORY_PROBE = """
import json, sys
from pathlib import Path
from connector.classifier import Classifier, TextInput
classifier = Classifier.load(Path(sys.argv[1]), threads=int(sys.argv[2]))
tickets = json.loads(sys.stdin.read())
classifier.predict([TextInput(t["subject"], t["body"]) for t in tickets])
status = dict(
    line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line
)
print(json.dumps({key: int(status[key].split()[0]) for key in ("VmRSS", "VmHWM")}))
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark the classifier against PyTorch references."
    )
    parser.add_argument("--model", type=Path, default=modeling_default_model())
    parser.add_argument(
        "--tickets", type=Path, required=True, help="CSV with subject and body columns"
    )
    parser.add_argument("--count", type=int, default=500, help="tickets to use")
    parser.add_argument("--threads", type=int, default=None, help="default: usable CPUs")
    parser.add_argument("--single-runs", type=int, default=2000, help="single-ticket calls to time")
    parser.add_argument("--bert-single-runs", type=int, default=60)
    parser.add_argument("--bert-batch-tickets", type=int, default=96)
    parser.add_argument("--batch-repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, help="directory for benchmark.json / benchmark.md")
    parser.add_argument("--card", action="store_true", help="write the results into MODEL_CARD.md")
    parser.add_argument(
        "--skip-bert", action="store_true", help="leave out the BERT-base reference"
    )
    return parser


def modeling_default_model() -> Path:
    return Path(__file__).resolve().parents[1] / "model"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    threads = args.threads or cpu_limit()
    torch.set_num_threads(threads)
    # Settable once per process; a second run in the same process finds it set already.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    tickets = read_tickets(args.tickets, args.count)
    items = [TextInput(t["subject"], t["body"]) for t in tickets]
    classifier = Classifier.load(args.model, threads=threads)
    texts = [classifier.prepare(item) for item in items]
    token_ids = classifier.encode_texts(texts)
    lexical = classifier.lexical_features(texts)
    lengths = [len(ids) for ids in token_ids]
    print(f"{len(items)} tickets, tokens p50 {np.median(lengths):.0f} max {max(lengths)}")

    results: dict[str, Any] = {
        "command": "python scripts/benchmark_classifier.py "
        + shlex.join(argv if argv is not None else sys.argv[1:]),
        "machine": modeling.machine_description(),
        "threads": {
            "onnxruntime_intra_op": classifier.threads,
            "onnxruntime_inter_op": 1,
            "torch_intra_op": torch.get_num_threads(),
            "torch_inter_op": 1,
        },
        "model_version": classifier.version,
        "tickets": len(items),
        "tokens_p50": float(np.median(lengths)),
        "tokens_max": int(max(lengths)),
    }

    # 1-2: the production path.
    single = time_single(lambda i: classifier.predict([items[i]]), len(items), args.single_runs)
    batch = time_batch(lambda: classifier.predict(items), len(items), args.batch_repeats)
    results["onnx"] = {"single": single, "batch": batch}
    report("ours (onnxruntime, full path)", single, batch)

    # 3: memory of a process that has only the model loaded.
    results["memory"] = measure_memory(args.model, threads, tickets[:32])
    print(
        f"memory of a process with the model loaded: RSS {results['memory']['rss_mb']:.0f} MB, "
        f"peak {results['memory']['peak_mb']:.0f} MB"
    )

    # 4: the same weights in PyTorch eager, for models train.py built (its architecture is
    # rebuilt from labels.json); the pretrained-encoder graph has no such description.
    if torch_rebuildable(args.model):
        torch_model = modeling.load_torch_export(args.model)
        verify_same_model(
            torch_model, classifier, token_ids[:64], lexical[:64] if lexical is not None else None
        )

        def torch_single(i: int) -> None:
            text = [classifier.prepare(items[i])]
            run_torch(torch_model, classifier.encode_texts(text), classifier.lexical_features(text))

        def torch_batch() -> None:
            texts = [classifier.prepare(item) for item in items]
            ids, features = classifier.encode_texts(texts), classifier.lexical_features(texts)
            for chunk in length_sorted_chunks(ids, 64):
                run_torch(
                    torch_model,
                    [ids[i] for i in chunk],
                    [features[i] for i in chunk] if features is not None else None,
                )

        single_t = time_single(torch_single, len(items), max(200, args.single_runs // 4))
        batch_t = time_batch(torch_batch, len(items), max(1, args.batch_repeats // 2))
        results["torch_same_model"] = {"single": single_t, "batch": batch_t}
        report("same model, PyTorch eager", single_t, batch_t)
    else:
        print(
            "same model, PyTorch eager: skipped (not a train.py model; labels.json has no "
            "architecture to rebuild it from)"
        )

    # 5: a BERT-base-sized encoder in PyTorch eager.
    if not args.skip_bert:
        bert = BertSizedClassifier(classes=10).eval()
        parameters = sum(p.numel() for p in bert.parameters())

        def bert_single(i: int) -> None:
            ids = classifier.encode_texts([classifier.prepare(items[i])])
            run_torch(bert, ids)

        subset = items[: args.bert_batch_tickets]

        def bert_batch() -> None:
            ids = classifier.encode_texts([classifier.prepare(item) for item in subset])
            for chunk in length_sorted_chunks(ids, 16):
                run_torch(bert, [ids[i] for i in chunk])

        single_b = time_single(bert_single, len(items), args.bert_single_runs, warmup=3)
        batch_b = time_batch(bert_batch, len(subset), 1)
        results["bert_base_eager"] = {
            "single": single_b,
            "batch": batch_b,
            "parameters": parameters,
            "shape": BERT_BASE,
        }
        report(
            f"BERT-base-sized encoder, PyTorch eager ({parameters / 1e6:.0f} M parameters)",
            single_b,
            batch_b,
        )
        results["ratios"] = {
            "p50_latency_bert_over_ours": single_b["p50_ms"] / single["p50_ms"],
            "p99_latency_bert_over_ours": single_b["p99_ms"] / single["p99_ms"],
            "throughput_ours_over_bert": batch["tickets_per_second"]
            / batch_b["tickets_per_second"],
        }
    if "torch_same_model" in results:
        torch_figures = results["torch_same_model"]
        results["ratios"] = {
            **results.get("ratios", {}),
            "p50_latency_torch_over_ours": torch_figures["single"]["p50_ms"] / single["p50_ms"],
            "throughput_ours_over_torch": batch["tickets_per_second"]
            / torch_figures["batch"]["tickets_per_second"],
        }
    for name, value in results.get("ratios", {}).items():
        print(f"ratio {name}: {value:.1f}x")
    markdown = render_markdown(results)
    print(f"command: {results['command']}")
    print(f"machine: {json.dumps(results['machine'])}")
    print(f"threads: {json.dumps(results['threads'])}")
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        modeling.write_json(args.output / "benchmark.json", results)
        (args.output / "benchmark.md").write_text(markdown + "\n", encoding="utf-8")
        print(f"wrote {args.output}/benchmark.json and benchmark.md")
    if args.card:
        modeling.update_card(args.model, "benchmark", markdown)
        print(f"updated {args.model / modeling.CARD_FILE} and its manifest")
    return 0


# -- inputs ------------------------------------------------------------------------------


def read_tickets(path: Path, count: int) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = [
            {"subject": row.get("subject") or "", "body": row.get("body") or row.get("text") or ""}
            for row in csv.DictReader(handle)
        ]
    if not rows:
        raise SystemExit(f"{path}: no tickets")
    return rows[:count]


def length_sorted_chunks(token_ids: Sequence[Sequence[int]], size: int) -> list[list[int]]:
    """Indices of ``token_ids`` in chunks of ``size``, shortest texts first."""
    ordered = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


# -- timing ------------------------------------------------------------------------------


def time_single(
    call: Callable[[int], Any], population: int, runs: int, warmup: int = 20
) -> dict[str, float]:
    """Latency of ``call(i)`` over ``runs`` calls cycling through the tickets."""
    for i in range(warmup):
        call(i % population)
    samples = []
    for run in range(runs):
        started = time.perf_counter()
        call(run % population)
        samples.append(time.perf_counter() - started)
    values = np.array(samples) * 1000
    return {
        "runs": runs,
        "p50_ms": float(np.percentile(values, 50)),
        "p90_ms": float(np.percentile(values, 90)),
        "p99_ms": float(np.percentile(values, 99)),
        "mean_ms": float(values.mean()),
    }


def time_batch(call: Callable[[], Any], tickets: int, repeats: int) -> dict[str, float]:
    """Throughput of ``call()`` over ``tickets`` tickets: the best of ``repeats`` runs."""
    call()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return {"tickets": tickets, "seconds": best, "tickets_per_second": tickets / best}


def report(name: str, single: dict[str, float], batch: dict[str, float]) -> None:
    print(
        f"{name}: one ticket p50 {single['p50_ms']:.2f} ms, p99 {single['p99_ms']:.2f} ms; "
        f"batch {batch['tickets_per_second']:.0f} tickets/s"
    )


def measure_memory(
    model_dir: Path, threads: int, tickets: list[dict[str, str]]
) -> dict[str, float]:
    completed = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(model_dir), str(threads)],
        input=json.dumps(tickets),
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    return {"rss_mb": figures["VmRSS"] / 1024, "peak_mb": figures["VmHWM"] / 1024}


# -- PyTorch references --------------------------------------------------------------


@torch.inference_mode()
def run_torch(
    model: nn.Module,
    token_ids: Sequence[Sequence[int]],
    lexical: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> Any:
    input_ids, attention_mask = pad(token_ids)
    inputs = [torch.from_numpy(input_ids), torch.from_numpy(attention_mask)]
    if lexical is not None:
        inputs += [torch.from_numpy(a) for a in pad_features(lexical)]
    return model(*inputs)


def verify_same_model(
    model: nn.Module,
    classifier: Classifier,
    token_ids: Sequence[Sequence[int]],
    lexical: Sequence[tuple[np.ndarray, np.ndarray]] | None,
) -> None:
    """PyTorch and onnxruntime must agree, or the comparison would be between different models."""
    expected = classifier.run_token_ids(token_ids, lexical)
    outputs = run_torch(model, token_ids, lexical)
    names = [h.output for h in classifier.spec.heads]
    for name, value in zip(names, outputs, strict=False):
        difference = float(np.abs(expected[name] - value.numpy()).max())
        if difference > 1e-4:
            raise SystemExit(
                f"PyTorch rebuild differs from the ONNX model on {name} by {difference:.2e}"
            )


class BertSizedClassifier(nn.Module):
    """BERT-base's shape (post-norm encoder, GELU) with a pooled classification head."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        shape = BERT_BASE
        self.tokens = nn.Embedding(shape["vocab"], shape["hidden"])
        self.positions = nn.Embedding(shape["positions"], shape["hidden"])
        self.types = nn.Embedding(2, shape["hidden"])
        self.norm = nn.LayerNorm(shape["hidden"])
        layer = nn.TransformerEncoderLayer(
            shape["hidden"],
            shape["heads"],
            shape["ffn"],
            dropout=0.1,
            activation="gelu",
            batch_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, shape["layers"], enable_nested_tensor=False)
        self.pooler = nn.Linear(shape["hidden"], shape["hidden"])
        self.classifier = nn.Linear(shape["hidden"], classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        ids = input_ids % self.tokens.num_embeddings
        positions = torch.arange(ids.shape[1]).unsqueeze(0)
        hidden = self.norm(
            self.tokens(ids) + self.positions(positions) + self.types(torch.zeros_like(ids))
        )
        hidden = self.encoder(hidden, src_key_padding_mask=attention_mask == 0)
        pooled = torch.tanh(self.pooler(hidden[:, 0]))
        return self.classifier(pooled).softmax(-1)


# -- report ------------------------------------------------------------------------------


def torch_rebuildable(model_dir: Path) -> bool:
    """Whether labels.json describes an architecture ``modeling.load_torch_export`` rebuilds."""
    labels = json.loads((model_dir / "labels.json").read_text(encoding="utf-8"))
    return "architecture" in labels.get("training", {})


def render_markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    rows = []
    for key, name in (
        ("onnx", "this model, onnxruntime (full path: prepare, tokenize, infer)"),
        ("torch_same_model", "this model, PyTorch eager (tokenize + infer)"),
        ("bert_base_eager", "BERT-base-sized encoder, PyTorch eager (tokenize + infer)"),
    ):
        if key in results:
            single, batch = results[key]["single"], results[key]["batch"]
            rows.append(
                (
                    name,
                    f"{single['p50_ms']:.2f}",
                    f"{single['p99_ms']:.2f}",
                    f"{batch['tickets_per_second']:.0f}",
                )
            )
    lines = [
        "## Speed and memory (generated by scripts/benchmark_classifier.py)",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Machine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs, "
        f"{machine['usable_cpus']} usable; Python {machine['python']}, "
        f"onnxruntime {machine['onnxruntime']}, torch {machine['torch']}.",
        f"Threads: {json.dumps(results['threads'])}.",
        f"Tickets: {results['tickets']} from the test split, "
        f"tokens p50 {results['tokens_p50']:.0f}, max {results['tokens_max']}.",
        "",
        modeling.markdown_table(
            ("runtime", "one ticket p50 (ms)", "p99 (ms)", "batch (tickets/s)"), rows
        ),
        "",
        f"Resident memory of a process with the model loaded (after classifying 32 tickets): "
        f"{results['memory']['rss_mb']:.0f} MB (peak {results['memory']['peak_mb']:.0f} MB).",
        "",
        "Ratios: "
        + ", ".join(
            f"{name.replace('_', ' ')} {value:.1f}x"
            for name, value in results.get("ratios", {}).items()
        ),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
