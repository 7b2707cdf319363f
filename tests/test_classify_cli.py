"""``helpdesk-triage classify``: formats, stdin/stdout, --text, order, malformed input."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import pytest

from connector import classify_cli
from connector.classifier import Classifier, TextInput

TINY_MODEL = Path(__file__).parent / "fixtures" / "classifier" / "tiny_model"


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    classify_cli.add_arguments(parser)
    return classify_cli.main(
        parser.parse_args([*argv, "--model", str(TINY_MODEL), "--threads", "1"])
    )


def set_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def read_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def write_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    import csv

    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "subject", "body"])
        writer.writerows(rows)
    return path


ROWS = [
    ("t-1", "VPN down", "The VPN connection drops every few minutes."),
    ("t-2", "Rechnung", "Die Rechnung für März ist doppelt abgebucht.\nBitte prüfen."),
    ("t-3", "", "thanks, great service!"),
    ("t-4", "Refund", "I returned the headphones and still have no refund."),
]


class TestFormats:
    def test_csv_file_to_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        source = write_csv(tmp_path / "tickets.csv", ROWS)
        target = tmp_path / "out.jsonl"
        assert run(["--input", str(source), "--output", str(target)]) == 0
        lines = read_lines(target.read_text(encoding="utf-8"))
        assert [line["id"] for line in lines] == ["t-1", "t-2", "t-3", "t-4"]
        model = Classifier.load(TINY_MODEL, threads=1)
        for line in lines:
            assert line["model_version"] == model.version
            predictions = line["predictions"]
            assert isinstance(predictions, dict)
            assert set(predictions) == set(model.heads)
            for head, answer in predictions.items():
                assert set(answer["probabilities"]) == set(model.labels[head])
                assert answer["confidence"] == answer["probabilities"][answer["label"]]
                assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert capsys.readouterr().out == ""

    def test_output_matches_the_classifier_in_input_order(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        rows = ROWS[::-1] + ROWS
        source = write_csv(tmp_path / "tickets.csv", rows)
        assert run(["--input", str(source)]) == 0
        lines = read_lines(capsys.readouterr().out)
        expected = Classifier.load(TINY_MODEL, threads=1).predict(
            [TextInput(s, b) for _, s, b in rows]
        )
        assert [line["id"] for line in lines] == [r[0] for r in rows]
        for line, prediction in zip(lines, expected, strict=True):
            assert isinstance(line["predictions"], dict)
            for head, answer in line["predictions"].items():
                assert answer["label"] == prediction[head].label
                assert answer["confidence"] == pytest.approx(prediction[head].confidence, abs=1e-5)

    def test_jsonl_to_stdout_with_positions_as_ids(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        source = tmp_path / "tickets.jsonl"
        source.write_text(
            '{"subject": "VPN", "body": "down again"}\n\n{"id": 42, "body": "refund please"}\n'
            '{"subject": "only a subject", "body": null}\n',
            encoding="utf-8",
        )
        assert run(["--input", str(source), "--output", "-"]) == 0
        lines = read_lines(capsys.readouterr().out)
        assert [line["id"] for line in lines] == [1, 42, 3]

    def test_stdin_csv(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        set_stdin(monkeypatch, b"subject,body\nPrinter,It is jammed\nVPN,It drops\n")
        assert run(["--input", "-", "--format", "csv"]) == 0
        assert [line["id"] for line in read_lines(capsys.readouterr().out)] == [1, 2]

    def test_stdin_jsonl(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        set_stdin(monkeypatch, b'{"id": "a", "subject": "x", "body": "y"}\n')
        assert run(["-i", "-", "--format", "jsonl"]) == 0
        assert [line["id"] for line in read_lines(capsys.readouterr().out)] == ["a"]

    def test_stdin_needs_a_format(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        set_stdin(monkeypatch, b"subject,body\na,b\n")
        assert run(["--input", "-"]) == 1
        assert "--format" in capsys.readouterr().err

    def test_unknown_extension(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        source = tmp_path / "tickets.txt"
        source.write_text("subject,body\na,b\n")
        assert run(["--input", str(source)]) == 1
        assert "tickets.txt" in capsys.readouterr().err
        assert run(["--input", str(source), "--format", "csv"]) == 0

    def test_text(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert run(["--text", "My laptop will not start", "--subject", "Laptop"]) == 0
        [line] = read_lines(capsys.readouterr().out)
        assert line["id"] == 1
        expected = Classifier.load(TINY_MODEL, threads=1).predict(
            [TextInput("Laptop", "My laptop will not start")]
        )
        assert isinstance(line["predictions"], dict)
        assert line["predictions"]["queue"]["label"] == expected[0]["queue"].label

    def test_wired_into_the_main_command(self, capsys: pytest.CaptureFixture[str]) -> None:
        from connector.cli import main

        assert (
            main(["classify", "--text", "hello", "--model", str(TINY_MODEL), "--threads", "1"]) == 0
        )
        assert len(read_lines(capsys.readouterr().out)) == 1

    def test_progress_on_stderr_for_long_inputs(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(classify_cli, "PROGRESS_INTERVAL_SECONDS", 0.0)
        source = write_csv(
            tmp_path / "many.csv", [(str(i), "VPN", f"drops {i}") for i in range(600)]
        )
        assert run(["--input", str(source), "--output", str(tmp_path / "out.jsonl")]) == 0
        err = capsys.readouterr().err
        assert "classify: 256 tickets" in err
        assert "600 tickets from" in err
        assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 600

    def test_quiet(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        source = write_csv(tmp_path / "t.csv", ROWS)
        assert run(["--input", str(source), "-o", str(tmp_path / "o.jsonl"), "--quiet"]) == 0
        assert capsys.readouterr().err == ""


class TestMalformedInput:
    def assert_fails(
        self, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
    ) -> str:
        assert run(argv) == 1
        err = capsys.readouterr().err
        assert message in err
        return err

    def test_missing_column(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        source = tmp_path / "t.csv"
        source.write_text("id,subject\n1,Printer\n")
        target = tmp_path / "out.jsonl"
        self.assert_fails(
            ["--input", str(source), "-o", str(target)],
            f"{source}:1: missing column 'body'",
            capsys,
        )
        assert not target.exists()
        assert list(tmp_path.iterdir()) == [source]  # no temporary file left behind

    def test_line_that_is_not_json(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        source = tmp_path / "t.jsonl"
        source.write_text('{"body": "a"}\n\n{"body": "b"\n{"body": "c"}\n')
        self.assert_fails(["--input", str(source)], f"{source}:3: not JSON", capsys)

    @pytest.mark.parametrize("line", ["[1, 2]", '"just a string"', "42"])
    def test_row_that_is_not_an_object(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str
    ) -> None:
        source = tmp_path / "t.jsonl"
        source.write_text('{"body": "fine"}\n' + line + "\n")
        self.assert_fails(["--input", str(source)], f"{source}:2: expected a JSON object", capsys)

    def test_field_of_the_wrong_type(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        source = tmp_path / "t.jsonl"
        source.write_text('{"subject": "x", "body": {"html": "<p>"}}\n')
        self.assert_fails(["--input", str(source)], f"{source}:1: 'body' must be a string", capsys)

    def test_object_without_text(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        source = tmp_path / "t.jsonl"
        source.write_text('{"id": 1}\n')
        self.assert_fails(
            ["--input", str(source)], f"{source}:1: needs a 'subject' or 'body'", capsys
        )

    def test_unreadable_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        missing = tmp_path / "missing.csv"
        self.assert_fails(["--input", str(missing)], f"{missing}: cannot read", capsys)

    def test_wrong_field_count_names_the_starting_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        source = tmp_path / "t.csv"
        source.write_text('subject,body\nA,"first line\nsecond line"\nB,b,extra\n')
        self.assert_fails(["--input", str(source)], f"{source}:4: expected 2 fields, got 3", capsys)

    def test_non_utf8_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        source = tmp_path / "t.jsonl"
        source.write_bytes('{"body": "ok"}\n{"body": "Gebühr"}\n'.encode("latin-1"))
        self.assert_fails(["--input", str(source)], f"{source}:2: not UTF-8", capsys)

    def test_existing_output_is_left_untouched(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        source = tmp_path / "t.jsonl"
        source.write_text('{"body": "a"}\nnot json\n')
        target = tmp_path / "out.jsonl"
        target.write_text("previous results\n")
        self.assert_fails(["--input", str(source), "-o", str(target)], ":2: not JSON", capsys)
        assert target.read_text() == "previous results\n"

    def test_stdout_reports_lines_written_before_the_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        source = tmp_path / "t.jsonl"
        good = "".join(json.dumps({"body": f"ticket {i}"}) + "\n" for i in range(300))
        source.write_text(good + "{broken\n")
        assert run(["--input", str(source)]) == 1
        captured = capsys.readouterr()
        written = len(captured.out.splitlines())
        assert written == classify_cli.CHUNK
        assert f"{source}:301: not JSON" in captured.err
        assert f"({written} lines were written to stdout)" in captured.err

    def test_bad_model_directory(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        parser = argparse.ArgumentParser()
        classify_cli.add_arguments(parser)
        args = parser.parse_args(["--text", "x", "--model", str(tmp_path)])
        assert classify_cli.main(args) == 1
        assert "manifest.json" in capsys.readouterr().err
