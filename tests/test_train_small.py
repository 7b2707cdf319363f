"""End to end on small data: train -> export -> load -> predict, plus the evaluation scripts.

Uses a few hundred rows of ../shared/data (skipped when it is absent) and
small synthetic CSVs, with tiny model sizes so that the whole module runs in
well under two minutes on two cores.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch", reason="training needs the train extra (PyTorch)")

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import benchmark_classifier  # noqa: E402
import cross_validate  # noqa: E402
import evaluate  # noqa: E402
import train  # noqa: E402

from connector.classifier import Classifier, TextInput  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not found at {DATA}")

SMALL = [
    "--limit-rows", "300", "--vocab-size", "600", "--dim", "16", "--ngram-buckets", "1024",
    "--lexical-buckets", "2048", "--char-buckets", "2048", "--word-buckets", "4096",
    "--epochs", "3", "--learning-rate", "0.02", "--threads", "1", "--golden", "8", "--quiet",
]  # fmt: skip


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_default(output: Path, *extra: str) -> int:
    return train.main(
        [
            "--train", str(DATA / "tickets" / "train.csv"),
            "--train", str(DATA / "sentiment" / "train.csv"),
            "--dev", str(DATA / "tickets" / "dev.csv"),
            "--dev", str(DATA / "sentiment" / "dev.csv"),
            "--heads", "queue,priority,type,sentiment",
            "--output", str(output),
            *SMALL,
            *extra,
        ]
    )  # fmt: skip


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not DATA.is_dir():
        pytest.skip(f"shared data not found at {DATA}")
    output = tmp_path_factory.mktemp("train") / "model"
    assert train_default(output) == 0
    return output


@needs_data
class TestTrainExportLoad:
    def test_model_directory_is_complete_and_loads(self, small_model: Path) -> None:
        names = {p.name for p in small_model.iterdir()}
        assert {"model.onnx", "tokenizer.json", "labels.json", "manifest.json"} <= names
        assert {"golden.jsonl", "MODEL_CARD.md"} <= names
        assert not any(name.startswith(".") for name in names)
        manifest = json.loads((small_model / "manifest.json").read_text())
        assert set(manifest["files"]) == names - {"manifest.json"}

        model = Classifier.load(small_model, threads=1)
        assert model.heads == ("queue", "priority", "type", "sentiment")
        assert set(model.labels["priority"]) == {"low", "medium", "high"}
        assert set(model.labels["sentiment"]) == {"negative", "neutral", "positive"}
        [prediction] = model.predict([TextInput("VPN", "The VPN drops every few minutes.")])
        assert set(prediction.heads) == set(model.heads)
        assert model.embed([TextInput("a", "b")]).shape[0] == 1

    def test_labels_record_training_files_and_calibration(self, small_model: Path) -> None:
        labels = json.loads((small_model / "labels.json").read_text())
        files = {f["file"]: f for f in labels["training"]["train_files"]}
        assert files["tickets/train.csv"]["sha256"] == sha256(DATA / "tickets" / "train.csv")
        assert files["sentiment/train.csv"]["sha256"] == sha256(DATA / "sentiment" / "train.csv")
        assert files["sentiment/train.csv"]["heads"] == ["sentiment"]
        assert [f["rows"] for f in labels["training"]["train_files"]] == [300, 300]
        assert all(h["temperature"] > 0 for h in labels["heads"])
        for head in labels["heads"]:  # the dev bootstrap interval brackets the fitted value
            dev = labels["training"]["dev"][head["name"]]
            assert dev["temperature_low"] <= head["temperature"] <= dev["temperature_high"]
        assert labels["text"]["max_tokens"] == 256
        assert labels["embedding"]["output"] == "embedding"

    def test_whole_word_features_are_the_default_view(self, small_model: Path) -> None:
        labels = json.loads((small_model / "labels.json").read_text())
        assert labels["inputs"] == ["input_ids", "attention_mask", "lexical_ids", "lexical_counts"]
        assert labels["word_features"]["buckets"] == 4096
        assert labels["training"]["architecture"]["wide_features"] == "words"
        assert labels["training"]["architecture"]["word_rows"] > 1000
        assert labels["memory"] is None  # the memory reads the subword view only
        model = Classifier.load(small_model, threads=1)
        texts = [model.prepare(TextInput("Drucker", "Der Drucker druckt nicht."))]
        features = model.lexical_features(texts)
        assert features is not None and len(features[0][0]) > 10

    def test_golden_examples_replay(self, small_model: Path) -> None:
        model = Classifier.load(small_model, threads=1)
        cases = [
            json.loads(line) for line in (small_model / "golden.jsonl").read_text().splitlines()
        ]
        items = [
            TextInput(
                c["subject"],
                bytes.fromhex(c["body_hex"]) if "body_hex" in c else c["body"],
                c.get("content_type"),
            )
            for c in cases
        ]
        for case, prediction in zip(cases, model.predict(items), strict=True):
            for head, answer in case["expected"].items():
                assert prediction[head].label == answer["label"]
                for label, value in answer["probabilities"].items():
                    assert prediction[head].probabilities[label] == pytest.approx(value, abs=1e-3)

    def test_card_has_the_generated_training_section(self, small_model: Path) -> None:
        card = (small_model / "MODEL_CARD.md").read_text()
        assert "<!-- BEGIN generated:training -->" in card
        assert "sentiment" in card

    def test_same_inputs_give_byte_identical_files(self, small_model: Path, tmp_path: Path) -> None:
        again = tmp_path / "again"
        assert train_default(again) == 0
        for name in ("model.onnx", "tokenizer.json", "labels.json", "golden.jsonl"):
            assert sha256(again / name) == sha256(small_model / name), name

    def test_retraining_keeps_the_hand_written_card(self, tmp_path: Path) -> None:
        output = tmp_path / "model"
        output.mkdir()
        (output / "MODEL_CARD.md").write_text("# Our model\n\nHand-written notes.\n")
        assert train_default(output, "--epochs", "1") == 0
        card = (output / "MODEL_CARD.md").read_text()
        assert card.startswith("# Our model\n\nHand-written notes.")
        assert "generated:training" in card
        Classifier.load(output)  # the manifest covers the final card

    def test_another_organisation_export_unchanged(self, tmp_path: Path) -> None:
        folder = DATA / "tickets-second-org"
        output = tmp_path / "org2"
        code = train.main(
            [
                "--train", str(folder / "train.csv"),
                "--dev", str(folder / "dev.csv"),
                "--heads", "queue,priority",
                "--output", str(output),
                *SMALL,
            ]
        )  # fmt: skip
        assert code == 0
        model = Classifier.load(output, threads=1)
        assert model.heads == ("queue", "priority")
        assert "Security Operations" in model.labels["queue"]


def write_rows(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def synthetic(count: int, offset: int = 0) -> list[list[str]]:
    """Queue follows the topic word, sentiment-free; easy enough that learning must show."""
    topics = [
        ("Billing", "invoice charged twice payment refund"),
        ("Network", "vpn router wifi connection dropped"),
        ("Hardware", "laptop screen keyboard broken battery"),
    ]
    rows = []
    for i in range(offset, offset + count):
        queue, words = topics[i % 3]
        chosen = " ".join(words.split()[j % 5] for j in range(i % 4 + 2))
        rows.append([f"Ticket {i}", f"Hello, my {chosen} problem number {i}. Thanks", queue, "low"])
    return rows


class TestLearning:
    def test_a_learnable_signal_is_learned(self, tmp_path: Path) -> None:
        header = ["subject", "body", "queue", "priority"]
        train_csv = write_rows(tmp_path / "train.csv", header, synthetic(240))
        dev_csv = write_rows(tmp_path / "dev.csv", header, synthetic(60, offset=1000))
        output = tmp_path / "model"
        code = train.main(
            [
                "--train", str(train_csv), "--dev", str(dev_csv), "--heads", "queue",
                "--output", str(output), "--vocab-size", "300", "--dim", "16",
                "--ngram-buckets", "512", "--lexical-buckets", "512", "--char-buckets", "512",
                "--epochs", "12", "--learning-rate", "0.03",
                "--threads", "1", "--quiet",
            ]
        )  # fmt: skip
        assert code == 0
        model = Classifier.load(output, threads=1)
        held_out = synthetic(60, offset=5000)
        predictions = model.predict([TextInput(r[0], r[1]) for r in held_out])
        accuracy = sum(p["queue"].label == r[2] for p, r in zip(predictions, held_out, strict=True))
        assert accuracy / len(held_out) >= 0.9

    def test_neighbour_memory_recognises_repeated_tickets(self, tmp_path: Path) -> None:
        # Each ticket's queue is arbitrary (not learnable from its words), but every
        # dev and test ticket is a light rewording of a training ticket: only the
        # memory of past tickets can get these right.
        queues = ["Alpha", "Beta", "Gamma"]
        words = [
            "printer",
            "laptop",
            "vpn",
            "invoice",
            "refund",
            "screen",
            "password",
            "mailbox",
            "server",
            "badge",
        ]

        def ticket(i: int, variant: int) -> list[str]:
            topic = " ".join(words[(i * 7 + j) % 10] + str((i * 13 + j * 5) % 97) for j in range(8))
            lead = ["Hello", "Hi team", "Dear support"][variant]
            return [f"Issue {i}", f"{lead}, problem with {topic}. Thanks", queues[(i * i) % 3]]

        header = ["subject", "body", "queue"]
        train_csv = write_rows(tmp_path / "train.csv", header, [ticket(i, 0) for i in range(150)])
        dev_csv = write_rows(tmp_path / "dev.csv", header, [ticket(i, 1) for i in range(0, 150, 2)])
        output = tmp_path / "model"
        code = train.main(
            [
                "--train", str(train_csv), "--dev", str(dev_csv), "--heads", "queue",
                "--output", str(output), "--vocab-size", "400", "--dim", "16",
                "--ngram-buckets", "512", "--lexical-buckets", "1024", "--char-buckets", "512",
                "--wide-features", "subwords", "--epochs", "3", "--threads", "1", "--quiet",
            ]
        )  # fmt: skip
        assert code == 0
        labels = json.loads((output / "labels.json").read_text())
        assert labels["memory"] is not None
        assert labels["memory"]["heads"] == ["queue"]
        assert labels["heads"][0]["memory_gain"] > 0
        model = Classifier.load(output, threads=1)
        repeats = [ticket(i, 2) for i in range(1, 150, 2)]  # reworded, never seen in dev
        predictions = model.predict([TextInput(r[0], r[1]) for r in repeats])
        hits = sum(p["queue"].label == r[2] for p, r in zip(predictions, repeats, strict=True))
        assert hits / len(repeats) >= 0.9

    def test_no_memory_option(self, tmp_path: Path) -> None:
        header = ["subject", "body", "queue", "priority"]
        train_csv = write_rows(tmp_path / "train.csv", header, synthetic(120))
        output = tmp_path / "model"
        code = train.main(
            [
                "--train", str(train_csv), "--dev", str(train_csv), "--heads", "queue",
                "--output", str(output), "--vocab-size", "300", "--dim", "8",
                "--ngram-buckets", "256", "--lexical-buckets", "256", "--char-buckets", "256",
                "--wide-features", "subwords", "--epochs", "1", "--threads", "1", "--quiet",
                "--no-memory",
            ]
        )  # fmt: skip
        assert code == 0
        assert json.loads((output / "labels.json").read_text())["memory"] is None

    def test_tags_head_is_multilabel(self, tmp_path: Path) -> None:
        header = ["subject", "body", "tags"]
        rows = [
            [r[0], r[1], f"{r[2]};Urgent" if i % 2 else r[2]] for i, r in enumerate(synthetic(240))
        ]
        train_csv = write_rows(tmp_path / "train.csv", header, rows)
        dev_csv = write_rows(tmp_path / "dev.csv", header, rows[:60])
        output = tmp_path / "model"
        code = train.main(
            [
                "--train", str(train_csv), "--dev", str(dev_csv), "--heads", "tags",
                "--output", str(output), "--vocab-size", "300", "--dim", "16",
                "--ngram-buckets", "512", "--lexical-buckets", "512", "--char-buckets", "512",
                "--epochs", "2", "--threads", "1", "--quiet",
            ]
        )  # fmt: skip
        assert code == 0
        model = Classifier.load(output, threads=1)
        assert set(model.labels["tags"]) == {"Billing", "Network", "Hardware", "Urgent"}
        [prediction] = model.predict([TextInput("x", "invoice")])
        probabilities = prediction["tags"].probabilities
        assert all(0.0 < p < 1.0 for p in probabilities.values())
        assert sum(probabilities.values()) != pytest.approx(1.0, abs=1e-3)  # independent sigmoids

    def test_malformed_training_file(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        bad = write_rows(tmp_path / "bad.csv", ["id", "queue"], [["1", "Billing"]])
        code = train.main(["--train", str(bad), "--dev", str(bad), "--output", str(tmp_path / "m")])
        assert code == 2
        assert f"{bad}:1: needs a subject, body or text column" in capsys.readouterr().err
        assert not (tmp_path / "m").exists()


@needs_data
class TestScripts:
    def slice_csv(self, source: Path, target: Path, rows: int) -> Path:
        with source.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            lines = [row for _, row in zip(range(rows + 1), reader, strict=False)]
        with target.open("w", encoding="utf-8", newline="") as handle:
            csv.writer(handle).writerows(lines)
        return target

    def test_evaluate_writes_reports_beside_baseline_and_comparison(
        self, small_model: Path, tmp_path: Path
    ) -> None:
        train_csv = self.slice_csv(DATA / "tickets" / "train.csv", tmp_path / "train.csv", 200)
        test_csv = self.slice_csv(DATA / "tickets" / "test.csv", tmp_path / "test.csv", 80)
        output = tmp_path / "eval"
        code = evaluate.main(
            [
                "--model", str(small_model), "--compare", str(small_model),
                "--test", str(test_csv), "--train", str(train_csv), "--output", str(output),
            ]
        )  # fmt: skip
        assert code == 0
        report = json.loads((output / "evaluation.json").read_text())
        systems = report["systems"]
        assert evaluate.BASELINE in systems
        assert len(systems) == 3
        queue = next(iter(systems.values()))["queue"]
        assert queue["rows"] == 80
        assert 0.0 <= queue["ece"] <= 1.0
        floor = queue["ece_if_calibrated"]
        assert (
            0.0 < floor["mean"] <= floor["p95"]
            and 0.0 <= floor["share_at_or_above_observed"] <= 1.0
        )
        assert len(queue["confusion"]["matrix"]) >= 2
        coverage = [p["coverage"] for p in queue["precision_coverage"]]
        assert coverage[0] == 1.0
        assert coverage == sorted(coverage, reverse=True)
        assert "sentiment" not in next(iter(systems.values()))  # no labels in this test file
        assert (output / "precision_coverage.png").stat().st_size > 1000
        assert "### queue" in (output / "evaluation.md").read_text()
        # Paired bootstrap: the model against itself differs by exactly nothing.
        against_itself = [row for row in report["paired"] if row["against"].startswith("compare ")]
        assert {row["head"] for row in against_itself} == {"queue", "priority", "type"}
        for row in against_itself:
            assert row["difference"] == 0.0
            assert row["interval_95"] == [0.0, 0.0]
            assert row["share_not_worse"] == 1.0
            assert row["coverage_difference"] == 0.0
            assert row["coverage_interval_95"] == [0.0, 0.0]
        assert "no clear difference on" in (output / "evaluation.md").read_text()
        assert 0.0 <= queue["at_target"]["coverage"] <= 1.0
        baseline_rows = [row for row in report["paired"] if row["against"] == evaluate.BASELINE]
        assert len(baseline_rows) == 3
        assert all(
            r["interval_95"][0] <= r["difference"] <= r["interval_95"][1] for r in baseline_rows
        )
        assert "_predicted" not in json.dumps(report)
        assert '"_confidence"' not in json.dumps(report)

    def benchmark(self, model: Path, tmp_path: Path) -> dict[str, Any]:
        """A short benchmark_classifier.py run on 20 test tickets; its JSON results."""
        tickets = self.slice_csv(DATA / "tickets" / "test.csv", tmp_path / "t.csv", 20)
        code = benchmark_classifier.main(
            [
                "--model", str(model), "--tickets", str(tickets), "--count", "20",
                "--single-runs", "20", "--batch-repeats", "1", "--skip-bert", "--threads", "1",
                "--output", str(tmp_path / "bench"),
            ]
        )  # fmt: skip
        assert code == 0
        results: dict[str, Any] = json.loads((tmp_path / "bench" / "benchmark.json").read_text())
        return results

    def test_benchmark_runs_and_reports(self, small_model: Path, tmp_path: Path) -> None:
        results = self.benchmark(small_model, tmp_path)
        assert results["onnx"]["single"]["p50_ms"] > 0
        assert results["memory"]["rss_mb"] > 10
        assert results["threads"]["onnxruntime_intra_op"] == 1
        assert "torch_same_model" in results  # a train.py model is rebuilt in PyTorch

    def test_benchmark_runs_on_the_bundled_encoder_model(self, tmp_path: Path) -> None:
        from connector.config import BUNDLED_MODEL

        results = self.benchmark(BUNDLED_MODEL, tmp_path)
        assert results["onnx"]["batch"]["tickets_per_second"] > 0
        assert "torch_same_model" not in results  # no architecture to rebuild: skipped, said so


class TestBaselineVariants:
    def test_recipes_start_with_evaluates_and_cover_each_combination_once(self) -> None:
        import baseline_variants

        recipes = baseline_variants.recipes()
        assert recipes[0] == evaluate.BaselineRecipe()
        assert len(recipes) == len(set(recipes)) == 8

    @needs_data
    def test_scores_every_recipe_and_head(self, tmp_path: Path) -> None:
        import baseline_variants

        slicer = TestScripts()
        train_csv = slicer.slice_csv(DATA / "tickets" / "train.csv", tmp_path / "train.csv", 120)
        test_csv = slicer.slice_csv(DATA / "tickets" / "test.csv", tmp_path / "test.csv", 40)
        output = tmp_path / "variants"
        code = baseline_variants.main(
            ["--train", str(train_csv), "--test", str(test_csv), "--heads", "queue,type",
             "--output", str(output)]
        )  # fmt: skip
        assert code == 0
        report = json.loads((output / "variants.json").read_text())
        assert report["variants"][0]["recipe"] == "char_wb, min_df 2, sublinear tf"
        assert len(report["variants"]) == 8
        for variant in report["variants"]:
            assert set(variant["scores"]) == {"queue", "type"}
            for scores in variant["scores"].values():
                assert 0.0 <= scores["macro_f1"] <= 1.0
                assert 0.0 < scores["accuracy"] <= 1.0
        assert report["command"].startswith("python scripts/baseline_variants.py --train ")
        assert "char, min_df 1, raw tf" in (output / "variants.md").read_text()

    @needs_data
    def test_folds_of_the_training_file_match_cross_validation(self, tmp_path: Path) -> None:
        import baseline_variants

        slicer = TestScripts()
        train_csv = slicer.slice_csv(DATA / "tickets" / "train.csv", tmp_path / "train.csv", 90)
        output = tmp_path / "variants"
        arguments = ["--train", str(train_csv), "--heads", "type", "--folds", "2"]
        assert baseline_variants.main([*arguments, "--output", str(output)]) == 0
        report = json.loads((output / "variants.json").read_text())
        assert report["test_files"] == "2 folds of train"
        for variant in report["variants"]:
            macro = [split["type"]["macro_f1"] for split in variant["per_split"]]
            assert len(macro) == 2
            assert variant["scores"]["type"]["macro_f1"] == pytest.approx(np.mean(macro))
        assert "mean over folds" in (output / "variants.md").read_text()

        train_set = evaluate.read_labelled([train_csv], ["type"])
        splits = baseline_variants.fold_splits(train_set, ["x"] * 90, 2, seed=0)
        assignment = cross_validate.fold_assignment(90, 2, 0)
        for fold, split in enumerate(splits):
            wanted = [train_set.items[i] for i in np.flatnonzero(assignment == fold)]
            assert split[2].items == wanted
            assert len(split[0].items) + len(wanted) == 90
        # Either a test file or folds, not both, not neither.
        assert baseline_variants.main([*arguments, "--test", str(train_csv)]) == 2
        assert baseline_variants.main(["--train", str(train_csv)]) == 2

    def test_missing_file_stops_with_exit_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        import baseline_variants

        missing = tmp_path / "missing.csv"
        assert baseline_variants.main(["--train", str(missing), "--test", str(missing)]) == 2
        assert "missing.csv: cannot read" in capsys.readouterr().err


class TestCrossValidation:
    def test_folds_cover_every_row_once(self) -> None:
        assignment = cross_validate.fold_assignment(10, 3, seed=4)
        assert sorted(np.bincount(assignment).tolist()) == [3, 3, 4]
        assert assignment.tolist() == cross_validate.fold_assignment(10, 3, seed=4).tolist()
        assert assignment.tolist() != cross_validate.fold_assignment(10, 3, seed=5).tolist()

    def test_runs_train_and_evaluate_per_fold(self, tmp_path: Path) -> None:
        header = ["subject", "body", "queue", "priority"]
        train_csv = write_rows(tmp_path / "train.csv", header, synthetic(90))
        dev_csv = write_rows(tmp_path / "dev.csv", header, synthetic(30, offset=90))
        output = tmp_path / "cv"
        model_dir = tmp_path / "card-model"
        model_dir.mkdir()
        (model_dir / "labels.json").write_text(json.dumps({"version": "v"}))
        code = cross_validate.main(
            [
                "--train", str(train_csv), "--dev", str(dev_csv), "--heads", "queue",
                "--folds", "2", "--output", str(output), "--threads", "1",
                "--card", str(model_dir),
                "--", "--vocab-size", "200", "--dim", "8", "--ngram-buckets", "256",
                "--word-buckets", "1024", "--epochs", "2", "--golden", "4",
            ]
        )  # fmt: skip
        assert code == 0
        report = json.loads((output / "cross_validation.json").read_text())
        assert len(report["per_fold"]) == 2
        held_out = [
            sum(1 for _ in csv.DictReader((output / f"fold-{k}" / "held-out-1-train.csv").open()))
            for k in (1, 2)
        ]
        assert sum(held_out) == 90 and min(held_out) == 45
        queue = report["summary"]["queue"]
        assert queue["rows"] == 90
        assert len(queue["differences"]) == 2
        assert queue["difference_mean"] == pytest.approx(
            queue["model_mean"] - queue["baseline_mean"], abs=1e-3
        )
        card = (model_dir / "MODEL_CARD.md").read_text()
        assert "<!-- BEGIN generated:cross-validation -->" in card
        assert all(f is not None and f > 0 for f in queue["model_temperature_factors"])
        choice = queue["calibration"]
        assert choice["method"] in ("temperature", "factor", "map")
        assert all(len(choice["ece_per_fold"][m]) == 2 for m in ("temperature", "factor", "map"))
        assert "Calibration chosen by the held-out folds" in card
        # --reuse rebuilds the report from the folds' evaluations without training again.
        evaluation = output / "fold-1" / "evaluation" / "evaluation.json"
        rescored = json.loads(evaluation.read_text())
        model_name = next(name for name in rescored["systems"] if name.startswith("model "))
        rescored["systems"][model_name]["queue"]["macro_f1"] = 1.0
        evaluation.write_text(json.dumps(rescored))
        # A fold evaluated without per-row probabilities is evaluated again to get them.
        second = output / "fold-2" / "evaluation" / "evaluation.json"
        stripped = json.loads(second.read_text())
        second_name = next(name for name in stripped["systems"] if name.startswith("model "))
        stripped["systems"][second_name]["queue"].pop("rows_kept")
        second.write_text(json.dumps(stripped))
        (output / "cross_validation.md").unlink()
        (model_dir / "MODEL_CARD.md").unlink()
        again = ["--train", str(train_csv), "--dev", str(dev_csv), "--output", str(output)]
        assert cross_validate.main([*again, "--reuse", "--card", str(model_dir)]) == 0
        assert (output / "cross_validation.md").read_text().strip() in (
            model_dir / "MODEL_CARD.md"
        ).read_text()
        rebuilt = json.loads((output / "cross_validation.json").read_text())
        assert rebuilt["per_fold"][0]["queue"]["model"] == 1.0
        assert rebuilt["command"] == report["command"]
        assert "rows_kept" in json.loads(second.read_text())["systems"][second_name]["queue"]
        assert rebuilt["summary"]["queue"]["calibration"] == choice

    def test_a_failing_fold_stops_with_a_message(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        header = ["subject", "body", "queue", "priority"]
        train_csv = write_rows(tmp_path / "train.csv", header, synthetic(30))
        code = cross_validate.main(
            ["--train", str(train_csv), "--dev", str(train_csv), "--heads", "priority",
             "--folds", "2", "--output", str(tmp_path / "cv"), "--", "--epochs", "1"]
        )  # fmt: skip
        assert code == 2
        error = capsys.readouterr().err
        assert "needs at least two labels" in error and "train.py failed on fold 1" in error

    def test_train_arguments_are_checked(self, tmp_path: Path) -> None:
        header = ["subject", "body", "queue", "priority"]
        train_csv = write_rows(tmp_path / "train.csv", header, synthetic(20))
        with pytest.raises(SystemExit):
            cross_validate.main(
                ["--train", str(train_csv), "--dev", str(train_csv), "--output", str(tmp_path),
                 "--", "--no-such-option"]
            )  # fmt: skip

    def test_unreadable_training_file(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = cross_validate.main(
            ["--train", str(tmp_path / "missing.csv"), "--dev", str(tmp_path / "x.csv"),
             "--output", str(tmp_path / "cv")]
        )  # fmt: skip
        assert code == 2
        assert "missing.csv: cannot read" in capsys.readouterr().err


class TestLogisticBlend:
    def test_head_logits_gain_exactly_the_regressions(self) -> None:
        import modeling
        import scipy.sparse as sp
        from sklearn.linear_model import LogisticRegression

        rng = np.random.default_rng(3)
        rows, width = 60, 40
        wide = sp.random(rows, width, density=0.2, random_state=3, format="csr", dtype=np.float32)
        targets = {"queue": rng.integers(0, 3, rows), "flag": rng.integers(0, 2, rows)}
        targets["queue"][:3] = [0, 1, 2]
        present = {name: np.ones(rows, dtype=bool) for name in targets}
        present["flag"][::4] = False  # rows without this label must not train it
        targets["flag"][~present["flag"]] = -1
        split = modeling.EncodedSplit(
            ids=[np.array([2, 3 + i % 5]) for i in range(rows)],
            targets=targets,
            present=present,
            wide=wide,
        )
        specs = [
            modeling.HeadSpec("queue", "multiclass", ("a", "b", "c")),
            modeling.HeadSpec("flag", "multiclass", ("no", "yes")),
        ]
        config = modeling.ModelConfig(
            arch="hybrid", vocab_size=16, dim=4, ngram_buckets=8, wide_features="words",
            word_buckets=32, word_rows=width, word_block_rows=10,
        )  # fmt: skip
        model = modeling.MultiTaskModel(config, specs).eval()
        before, _ = modeling.predict_logits(model, split)
        assert modeling.blend_logistic([model], specs, split) == ["queue", "flag"]
        after, _ = modeling.predict_logits(model, split)

        queue = LogisticRegression(class_weight="balanced", max_iter=3000)
        expected = queue.fit(wide, targets["queue"]).decision_function(wide)
        gained = after["queue"] - before["queue"]
        np.testing.assert_allclose(gained, expected, atol=1e-4)
        has = present["flag"]
        flag = LogisticRegression(class_weight="balanced", max_iter=3000)
        flag.fit(wide[has], targets["flag"][has])
        gained = after["flag"] - before["flag"]
        margin = gained[:, 1] - gained[:, 0]
        np.testing.assert_allclose(margin, flag.decision_function(wide), atol=1e-4)


class TestEnsembleFolding:
    """An ensemble of whole-word hybrids is exported with one wide part, and computes the mean."""

    SPECS = (
        ("queue", "multiclass", ("a", "b", "c")),
        ("sentiment", "multiclass", ("neg", "neu", "pos")),
    )

    @staticmethod
    def members(count: int, remap_seed: int = 0) -> list:
        import modeling
        import torch

        specs = [modeling.HeadSpec(*spec) for spec in TestEnsembleFolding.SPECS]
        config = modeling.ModelConfig(
            arch="hybrid", vocab_size=16, dim=4, ngram_buckets=8, wide_features="words",
            word_buckets=32, word_rows=20, word_block_rows=8,
        )  # fmt: skip
        rng = np.random.default_rng(remap_seed)
        statistics = modeling.WordStatistics(
            rng.integers(0, 20, 64).astype(np.int32),
            rng.uniform(1.0, 3.0, 20).astype(np.float32),
            8,
        )
        models = []
        for seed in range(count):
            torch.manual_seed(seed)
            model = modeling.MultiTaskModel(config, specs, statistics=statistics).eval()
            with torch.no_grad():  # the heads' biases start at zero; make each member differ
                for head in model.heads.values():
                    head.bias.uniform_(-1, 1)
            models.append(model)
        return models

    @staticmethod
    def inputs() -> tuple:
        import torch

        ids = torch.tensor([[2, 5, 6, 7], [2, 8, 3, 0], [2, 0, 0, 0]])
        lexical_ids = torch.tensor([[3, 40, 11, 7], [5, 0, 0, 0], [0, 0, 0, 0]])
        counts = torch.tensor([[1.0, 2.0, 1.0, 3.0], [1.0, 0, 0, 0], [0, 0, 0, 0]])
        return ids, (ids > 0).to(torch.int64), lexical_ids, counts

    def test_folded_graph_computes_the_members_mean(self) -> None:
        import modeling
        import torch

        members = self.members(3)
        specs = [modeling.HeadSpec(*spec) for spec in self.SPECS]
        fusions = {"queue": modeling.Fusion(1.5), "sentiment": modeling.Fusion(0.8)}
        ids, mask, lexical_ids, counts = self.inputs()
        with torch.no_grad():
            each = [m(ids, mask, lexical=(lexical_ids, counts))[0] for m in members]
            export = modeling.ExportModule(members, specs, fusions, half_embeddings=False)
            outputs = export(ids, mask, lexical_ids, counts)
        assert export.shared_wide
        for index, spec in enumerate(specs):
            mean = torch.stack([logits[spec.name] for logits in each]).mean(0)
            expected = (mean / fusions[spec.name].temperature).softmax(-1)
            torch.testing.assert_close(outputs[index], expected, atol=1e-6, rtol=1e-5)
        assert outputs[-1].shape == (3, 3 * 4)  # every member's embedding, concatenated

    def test_the_file_holds_one_wide_part(self) -> None:
        import modeling

        specs = [modeling.HeadSpec(*spec) for spec in self.SPECS]
        fusions = {spec.name: modeling.Fusion(1.0) for spec in specs}
        export = modeling.ExportModule(self.members(3), specs, fusions)
        names = list(export.state_dict())
        assert [n for n in names if ".wide." in n] == [
            "members.0.wide.wide_queue.weight",
            "members.0.wide.wide_sentiment.weight",
        ]
        assert [n for n in names if n.endswith(".remap")] == ["members.0.encoder.words.remap"]
        assert sum(n.endswith("bag.unigrams.weight") for n in names) == 3

    def test_members_with_different_views_are_refused(self) -> None:
        import modeling

        specs = [modeling.HeadSpec(*spec) for spec in self.SPECS]
        fusions = {spec.name: modeling.Fusion(1.0) for spec in specs}
        mixed = self.members(1) + self.members(1, remap_seed=1)
        with pytest.raises(ValueError, match="different tf-idf views"):
            modeling.ExportModule(mixed, specs, fusions)

    @needs_data
    def test_trained_ensemble_exports_loads_and_rebuilds(self, tmp_path: Path) -> None:
        import modeling
        import onnx

        output = tmp_path / "model"
        assert train_default(output, "--ensemble", "2") == 0
        graph = onnx.load(str(output / "model.onnx"))
        wide = [i.name for i in graph.graph.initializer if ".wide." in i.name]
        assert len(wide) == 4  # one per head, not one per head and member
        model = Classifier.load(output, threads=1)
        (prediction,) = model.predict([TextInput("VPN down", "Cannot connect since today")])
        assert set(prediction.heads) == {"queue", "priority", "type", "sentiment"}
        rebuilt = modeling.load_torch_export(output)
        assert rebuilt.shared_wide and len(rebuilt.members) == 2


class TestCalibrationDiagnostics:
    @staticmethod
    def sample(rows: int, scale: float, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Logits, and labels drawn from softmax(logits / scale): the truth is ``scale`` softer."""
        rng = np.random.default_rng(seed)
        logits = rng.normal(0.0, 2.0, (rows, 3))
        truth = np.exp(logits / scale)
        truth /= truth.sum(1, keepdims=True)
        labels = np.array([rng.choice(3, p=p) for p in truth])
        return logits, labels

    def test_temperature_factor_reads_overconfidence(self) -> None:
        names = ["a", "b", "c"]
        for scale in (1.0, 2.0):
            logits, labels = self.sample(6000, scale)
            probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
            gold = [names[i] for i in labels]
            factor = evaluate.temperature_factor(names, gold, probabilities)
            assert factor == pytest.approx(scale, rel=0.1)
        gold[0] = "not-a-label"  # a class the system does not know is left out, not an error
        factor = evaluate.temperature_factor(names, gold, probabilities)
        assert factor == pytest.approx(2.0, rel=0.1)

    def test_ece_floor_tells_noise_from_miscalibration(self) -> None:
        from connector.classifier import expected_calibration_error

        rng = np.random.default_rng(7)
        confidence = rng.uniform(0.4, 1.0, 500)
        calibrated = rng.random(500) < confidence
        observed = expected_calibration_error(confidence, calibrated)
        floor = evaluate.ece_if_calibrated(confidence, observed, draws=500)
        assert observed > 0.02  # 500 rows: binning noise alone is visible
        assert 0.02 < floor["mean"] < floor["p95"] < 0.1
        assert floor["share_at_or_above_observed"] > 0.05

        overconfident = rng.random(500) < confidence - 0.15
        observed = expected_calibration_error(confidence, overconfident)
        floor = evaluate.ece_if_calibrated(confidence, observed, draws=500)
        assert observed > floor["p95"]
        assert floor["share_at_or_above_observed"] < 0.01

        larger = np.tile(confidence, 8)
        assert evaluate.ece_if_calibrated(larger, 0.0, draws=200)["mean"] < floor["mean"] / 2

    def test_temperature_interval_narrows_with_more_rows(self) -> None:
        import modeling

        widths = []
        for rows in (150, 2400):
            logits, labels = self.sample(rows, 1.5, seed=rows)
            low, high = modeling.temperature_interval(logits, labels, draws=100)
            assert low <= modeling.fit_temperature(logits, labels) <= high
            widths.append(high - low)
        assert widths[1] < widths[0] / 2


class TestCrossValidatedCalibration:
    MAP = {"x": [0.3, 0.6, 0.9, 1.0], "y": [0.3, 0.45, 0.85, 0.95]}

    @staticmethod
    def report(path: Path, choices: dict[str, dict[str, Any]]) -> Path:
        summary = {head: {"calibration": choice} for head, choice in choices.items()}
        document = {"command": "python scripts/cross_validate.py x", "summary": summary}
        path.write_text(json.dumps(document))
        return path

    def test_choices_are_read_and_recorded(self, tmp_path: Path) -> None:
        choices = {
            "queue": {"method": "factor", "factor": 1.5},
            "type": {"method": "map", "map": self.MAP},
        }
        report = self.report(tmp_path / "cv.json", choices)
        read = train.read_calibration(report)
        assert set(read.choices) == {"queue", "type"}
        assert read.record["methods"] == {"queue": "factor", "type": "map"}

    def test_unusable_reports_are_refused(self, tmp_path: Path) -> None:
        import modeling

        with pytest.raises(modeling.DataError, match=r"not a cross_validate\.py report"):
            train.read_calibration(tmp_path / "missing.json")
        old = tmp_path / "old.json"
        old.write_text(json.dumps({"summary": {"queue": {"model_temperature_factors": [1.1]}}}))
        with pytest.raises(modeling.DataError, match="--reuse"):
            train.read_calibration(old)
        for bad in (
            {"method": "map", "map": {"x": [0.5, 0.4], "y": [0.1, 0.2]}},
            {"method": "factor", "factor": 0},
            {"method": "guess"},
        ):
            path = self.report(tmp_path / "bad.json", {"queue": bad})
            with pytest.raises(modeling.DataError, match="not a cross_validate"):
                train.read_calibration(path)

    @needs_data
    def test_factors_and_maps_reach_the_graph(self, small_model: Path, tmp_path: Path) -> None:
        import calibration

        choices = {
            "queue": {"method": "factor", "factor": 2.0},
            "sentiment": {"method": "factor", "factor": 0.5},
            "type": {"method": "map", "map": self.MAP},
            "priority": {"method": "temperature"},
        }
        report = self.report(tmp_path / "cv.json", choices)
        output = tmp_path / "model"
        assert train_default(output, "--calibration-from", str(report)) == 0
        plain_labels = json.loads((small_model / "labels.json").read_text())
        plain = {h["name"]: h for h in plain_labels["heads"]}
        labels = json.loads((output / "labels.json").read_text())
        heads = {h["name"]: h for h in labels["heads"]}
        for name, factor in (("queue", 2.0), ("sentiment", 0.5)):
            assert heads[name]["calibration"] == "factor"
            assert heads[name]["temperature_dev"] == plain[name]["temperature"]
            assert heads[name]["temperature"] == pytest.approx(factor * plain[name]["temperature"])
        assert heads["priority"]["calibration"] == "temperature"
        assert heads["priority"]["temperature"] == plain["priority"]["temperature"]
        assert heads["type"]["calibration"] == "map"
        assert heads["type"]["confidence_map"] == self.MAP
        assert heads["type"]["temperature"] == plain["type"]["temperature"]
        recorded = labels["training"]["optimisation"]["calibration_from"]
        assert recorded["methods"]["type"] == "map"
        # The graph applies them: queue less confident, type's confidence mapped.
        tickets = [
            TextInput("Invoice", "I was charged twice for my subscription this month"),
            TextInput("Server down", "Our production database is unreachable since 3am"),
        ]
        before = Classifier.load(small_model, threads=1).predict(tickets)
        after = Classifier.load(output, threads=1).predict(tickets)
        for old, new in zip(before, after, strict=True):
            assert new["queue"].label == old["queue"].label
            assert new["queue"].confidence < old["queue"].confidence
            names = list(old["type"].probabilities)
            plain_type = np.array([[old["type"].probabilities[n] for n in names]])
            want = calibration.apply_map(plain_type, calibration.ConfidenceMap.from_json(self.MAP))
            got = [new["type"].probabilities[n] for n in names]
            assert np.allclose(want[0], got, atol=1e-5)
            assert new["type"].label == old["type"].label

    def test_a_bad_report_stops_training(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        header = ["subject", "body", "queue", "priority"]
        train_csv = write_rows(tmp_path / "train.csv", header, synthetic(30))
        code = train.main(
            ["--train", str(train_csv), "--dev", str(train_csv), "--heads", "queue",
             "--output", str(tmp_path / "m"), "--calibration-from", str(tmp_path / "none.json")]
        )  # fmt: skip
        assert code == 2
        assert "none.json: not a cross_validate.py report" in capsys.readouterr().err


class TestFrictions:
    """What an admin meets training on an export: one file, rare labels, sorted files."""

    def test_without_dev_a_stable_tenth_of_the_training_rows_is_the_dev_split(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        header = ["subject", "body", "queue", "priority"]
        train_csv = write_rows(tmp_path / "export.csv", header, synthetic(300))
        output = tmp_path / "model"
        code = train.main(
            [
                "--train", str(train_csv), "--heads", "queue", "--output", str(output),
                "--vocab-size", "300", "--dim", "16", "--ngram-buckets", "512",
                "--lexical-buckets", "512", "--char-buckets", "512", "--epochs", "2",
                "--threads", "1", "--golden", "4",
            ]
        )  # fmt: skip
        assert code == 0
        said = capsys.readouterr().out
        assert "no --dev given:" in said and "are the dev split" in said
        labels = json.loads((output / "labels.json").read_text())
        (dev,) = labels["training"]["dev_files"]
        assert dev["file"].startswith("10% of the training rows")
        assert 10 <= dev["rows"] <= 50
        assert labels["training"]["train_files"][0]["rows"] == 300  # as read, before the split

    def test_the_split_is_by_text_so_runs_and_file_order_agree(self) -> None:
        import modeling

        rows = [modeling.Row(f"text {i}", {"queue": "a"}) for i in range(400)]
        first = modeling.split_off_dev(rows)
        again = modeling.split_off_dev(list(reversed(rows)))
        assert {r.text for r in first[1]} == {r.text for r in again[1]}
        assert 20 <= len(first[1]) <= 60

    def test_limit_rows_samples_a_file_sorted_by_label(self, tmp_path: Path) -> None:
        import modeling

        by_label = sorted(synthetic(300), key=lambda row: row[2])
        path = write_rows(
            tmp_path / "sorted.csv", ["subject", "body", "queue", "priority"], by_label
        )
        sample = modeling.read_rows(path, ["queue"], limit=30)
        assert len(sample) == 30
        assert {row.labels["queue"] for row in sample} == {"Billing", "Network", "Hardware"}
        assert modeling.read_rows(path, ["queue"], limit=30) == sample

    def test_unknown_dev_labels_are_counted_as_labels_and_named(self) -> None:
        import modeling

        specs = [modeling.HeadSpec("queue", "multiclass", ("Billing", "Network"))]
        rows = [
            modeling.Row("a", {"queue": "Legal"}),
            modeling.Row("b", {"queue": "Legal"}),
            modeling.Row("c", {"queue": "Facilities"}),
            modeling.Row("d", {"queue": "Billing"}),
        ]
        said: list[str] = []
        kept = train.restrict_to_known_labels(rows, specs, said.append)
        assert [r.text for r in kept] == ["d"]
        assert said == [
            "dev: 2 labels unknown to the training data, on 3 rows, were ignored "
            "(queue: Facilities, Legal)"
        ]
