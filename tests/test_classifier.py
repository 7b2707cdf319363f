"""The classifier: loading and verification, batching, edge inputs, golden replay, helpers.

Most tests use the tiny model under tests/fixtures/classifier/tiny_model (its
README says how it was made), so they do not depend on the bundled model's
figures. The golden replay runs for the tiny model and, when present, for the
bundled model in model/.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from connector import classifier as classifier_module
from connector import cpu
from connector.classifier import (
    Classifier,
    TextInput,
    expected_calibration_error,
    head_prediction,
    pad,
    plan_batches,
    precision_coverage,
    session_options,
    sha256_file,
    softmax,
)
from connector.config import BUNDLED_MODEL
from connector.errors import ModelError

WORD_FEATURES = {"buckets": 4096, "min_chars": 2, "max_chars": 5, "text_chars": 4000}
FIXTURES = Path(__file__).parent / "fixtures" / "classifier"
TINY_MODEL = FIXTURES / "tiny_model"

TICKETS = [
    TextInput("VPN down", "The VPN connection drops every few minutes since the update."),
    TextInput("Rechnung", "Die Rechnung für März ist doppelt abgebucht worden."),
    TextInput("", "thanks for the quick help, great service!"),
    TextInput("Refund", "I returned the headphones two weeks ago and still have no refund. " * 20),
    TextInput("Server", "Production database unreachable, all customers affected."),
    TextInput("", ""),
    TextInput("Laptop", "Need a new laptop for the new colleague starting Monday."),
]


@pytest.fixture(scope="module")
def tiny() -> Classifier:
    return Classifier.load(TINY_MODEL, threads=1)


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(TINY_MODEL, target)
    return target


def refresh_manifest(model_dir: Path) -> None:
    """Recompute checksums after a deliberate edit, so only the edit itself is wrong."""
    manifest_path = model_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for name in manifest["files"]:
        manifest["files"][name]["sha256"] = sha256_file(model_dir / name)
    manifest_path.write_text(json.dumps(manifest))


def edit_labels(
    model_dir: Path, change: dict[str, object] | None = None, **head_changes: object
) -> None:
    path = model_dir / "labels.json"
    labels = json.loads(path.read_text())
    labels.update(change or {})
    for key, value in head_changes.items():
        labels["heads"][0][key] = value
    path.write_text(json.dumps(labels))
    refresh_manifest(model_dir)


def assert_same_predictions(left: list, right: list, tolerance: float) -> None:  # type: ignore[type-arg]
    assert len(left) == len(right)
    for a, b in zip(left, right, strict=True):
        assert a.heads.keys() == b.heads.keys()
        for head in a.heads:
            assert a[head].label == b[head].label
            for label, probability in a[head].probabilities.items():
                assert probability == pytest.approx(b[head].probabilities[label], abs=tolerance)


# -- loading and verification ------------------------------------------------------------


class TestLoad:
    def test_exposes_version_heads_and_labels(self, tiny: Classifier) -> None:
        labels = json.loads((TINY_MODEL / "labels.json").read_text())
        assert tiny.version == labels["version"]
        assert tiny.heads == tuple(h["name"] for h in labels["heads"])
        assert tiny.labels == {h["name"]: tuple(h["labels"]) for h in labels["heads"]}
        assert tiny.has_embedding

    @pytest.mark.parametrize(
        "name", ["model.onnx", "tokenizer.json", "labels.json", "manifest.json"]
    )
    def test_missing_file_is_named(self, model_copy: Path, name: str) -> None:
        (model_copy / name).unlink()
        with pytest.raises(ModelError, match=re.escape(name)):
            Classifier.load(model_copy)

    @pytest.mark.parametrize(
        "name", ["model.onnx", "tokenizer.json", "labels.json", "golden.jsonl"]
    )
    def test_checksum_mismatch_is_named(self, model_copy: Path, name: str) -> None:
        with (model_copy / name).open("ab") as handle:
            handle.write(b"\n")
        with pytest.raises(ModelError, match=re.escape(f"{name}: sha256")):
            Classifier.load(model_copy)

    def test_required_file_missing_from_manifest(self, model_copy: Path) -> None:
        manifest = json.loads((model_copy / "manifest.json").read_text())
        del manifest["files"]["tokenizer.json"]
        (model_copy / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ModelError, match=r"tokenizer\.json: not listed"):
            Classifier.load(model_copy)

    def test_listed_file_missing(self, model_copy: Path) -> None:
        (model_copy / "golden.jsonl").unlink()
        with pytest.raises(ModelError, match=r"golden\.jsonl: listed"):
            Classifier.load(model_copy)

    def test_label_count_must_match_the_graph(self, model_copy: Path) -> None:
        labels = json.loads((model_copy / "labels.json").read_text())
        edit_labels(model_copy, labels=labels["heads"][0]["labels"][:-1])
        with pytest.raises(ModelError, match=r"labels\.json lists") as caught:
            Classifier.load(model_copy)
        assert "model.onnx" in str(caught.value)

    def test_head_without_output(self, model_copy: Path) -> None:
        edit_labels(model_copy, output="probs_nonexistent")
        with pytest.raises(ModelError, match=r"model\.onnx: has no output 'probs_nonexistent'"):
            Classifier.load(model_copy)

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"format": 99}, "format"),
            ({"version": ""}, "version"),
            ({"heads": []}, "heads"),
            ({"text": {"max_tokens": 0}}, "max_tokens"),
            ({"embedding": {"output": "nope"}}, "nope"),
        ],
    )
    def test_inconsistent_labels_file(
        self, model_copy: Path, change: dict[str, object], message: str
    ) -> None:
        edit_labels(model_copy, change)
        with pytest.raises(ModelError, match=message):
            Classifier.load(model_copy)

    def test_duplicate_labels_rejected(self, model_copy: Path) -> None:
        edit_labels(model_copy, labels=["a", "a"])
        with pytest.raises(ModelError, match=r"labels\.json: head .* distinct"):
            Classifier.load(model_copy)

    def test_labels_file_not_json(self, model_copy: Path) -> None:
        (model_copy / "labels.json").write_text("{not json")
        refresh_manifest(model_copy)
        with pytest.raises(ModelError, match=r"labels\.json: not valid JSON"):
            Classifier.load(model_copy)

    def test_corrupt_onnx_file(self, model_copy: Path) -> None:
        (model_copy / "model.onnx").write_bytes(b"this is not a protobuf")
        refresh_manifest(model_copy)
        with pytest.raises(ModelError, match=r"model\.onnx: cannot load"):
            Classifier.load(model_copy)

    def test_corrupt_tokenizer(self, model_copy: Path) -> None:
        (model_copy / "tokenizer.json").write_text('{"version": "1.0"}')
        refresh_manifest(model_copy)
        with pytest.raises(ModelError, match=r"tokenizer\.json: cannot load"):
            Classifier.load(model_copy)

    def test_version_must_agree_with_manifest(self, model_copy: Path) -> None:
        edit_labels(model_copy, {"version": "something-else"})
        with pytest.raises(ModelError, match="differs"):
            Classifier.load(model_copy)

    def test_missing_directory(self, tmp_path: Path) -> None:
        with pytest.raises(ModelError, match="does not exist"):
            Classifier.load(tmp_path / "nowhere")


class TestSession:
    def test_options(self) -> None:
        options = session_options(3)
        assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
        assert options.intra_op_num_threads == 3
        assert options.inter_op_num_threads == 1
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"

    def test_spin_wait_on_request(self) -> None:
        options = session_options(2, spin_wait=True)
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"

    def test_explicit_threads(self, tiny: Classifier) -> None:
        assert tiny.threads == 1

    def test_default_threads_come_from_the_cpu_limit(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(classifier_module, "cpu_limit", lambda: 3)
        assert Classifier.load(TINY_MODEL).threads == 3


def build_graph_model(
    target: Path, inputs: list[str], word_features: dict[str, int] | None = None
) -> None:
    """A minimal model whose graph declares exactly ``inputs``: mean token id -> 2 classes."""
    onnx = pytest.importorskip("onnx")
    helper = onnx.helper
    tensor = onnx.TensorProto
    graph_inputs = [
        helper.make_tensor_value_info(
            n, tensor.FLOAT if n == "lexical_counts" else tensor.INT64, ["batch", "sequence"]
        )
        for n in inputs
    ]
    weights = helper.make_tensor("weights", tensor.FLOAT, [1, 2], [0.01, -0.01])
    nodes = [
        helper.make_node("Cast", [inputs[0]], ["as_float"], to=tensor.FLOAT),
        helper.make_node("ReduceMean", ["as_float"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("MatMul", ["mean", "weights"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs_flag"], axis=-1),
    ]
    output = helper.make_tensor_value_info("probs_flag", tensor.FLOAT, ["batch", 2])
    graph = helper.make_graph(nodes, "tiny", graph_inputs, [output], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    target.mkdir()
    onnx.save(model, str(target / "model.onnx"))
    shutil.copy(TINY_MODEL / "tokenizer.json", target / "tokenizer.json")
    labels = {
        "format": 1,
        "version": "graph-test",
        "heads": [{"name": "flag", "labels": ["no", "yes"]}],
        "word_features": word_features,
    }
    (target / "labels.json").write_text(json.dumps(labels))
    (target / "manifest.json").write_text(json.dumps({"model_version": "graph-test", "files": {}}))
    manifest = {
        "model_version": "graph-test",
        "files": {
            n: {"sha256": sha256_file(target / n)}
            for n in ("model.onnx", "tokenizer.json", "labels.json")
        },
    }
    (target / "manifest.json").write_text(json.dumps(manifest))


class TestGraphInputs:
    @pytest.mark.parametrize(
        "inputs", [["input_ids"], ["input_ids", "attention_mask", "token_type_ids"]]
    )
    def test_only_declared_inputs_are_fed(self, tmp_path: Path, inputs: list[str]) -> None:
        build_graph_model(tmp_path / "m", inputs)
        model = Classifier.load(tmp_path / "m", threads=1)
        [prediction] = model.predict([TextInput("a", "b c d")])
        assert set(prediction["flag"].probabilities) == {"no", "yes"}
        assert not model.has_embedding

    def test_unknown_input_is_rejected(self, tmp_path: Path) -> None:
        build_graph_model(tmp_path / "m", ["input_ids", "pixel_values"])
        with pytest.raises(ModelError, match=r"model\.onnx: inputs"):
            Classifier.load(tmp_path / "m")

    def test_whole_word_inputs_are_fed(self, tmp_path: Path) -> None:
        inputs = ["input_ids", "attention_mask", "lexical_ids", "lexical_counts"]
        build_graph_model(tmp_path / "m", inputs, WORD_FEATURES)
        model = Classifier.load(tmp_path / "m", threads=1)
        # Empty and very long texts in one batch: padding must keep both shapes valid.
        predictions = model.predict([TextInput("", ""), TextInput("a", "Drucker kaputt " * 500)])
        assert [set(p["flag"].probabilities) for p in predictions] == [{"no", "yes"}] * 2
        texts = ["Drucker kaputt", ""]
        with pytest.raises(ValueError, match="lexical_features"):
            model.run_token_ids(model.encode_texts(texts))
        features = model.lexical_features(texts)
        assert features is not None and len(features[0][0]) > 0 and len(features[1][0]) == 0

    def test_whole_word_inputs_need_their_settings(self, tmp_path: Path) -> None:
        inputs = ["input_ids", "lexical_ids", "lexical_counts"]
        build_graph_model(tmp_path / "m", inputs, None)
        with pytest.raises(ModelError, match="no word_features"):
            Classifier.load(tmp_path / "m")

    def test_whole_word_inputs_come_in_pairs(self, tmp_path: Path) -> None:
        build_graph_model(tmp_path / "m", ["input_ids", "lexical_ids"], WORD_FEATURES)
        with pytest.raises(ModelError, match="needs both"):
            Classifier.load(tmp_path / "m")

    @pytest.mark.parametrize(
        ("change", "message"),
        [({"min_chars": 6}, "exceeds"), ({"buckets": 0}, "buckets"), ({"text_chars": "x"}, "text")],
    )
    def test_bad_word_feature_settings(
        self, tmp_path: Path, change: dict[str, object], message: str
    ) -> None:
        inputs = ["input_ids", "lexical_ids", "lexical_counts"]
        build_graph_model(tmp_path / "m", inputs, {**WORD_FEATURES, **change})  # type: ignore[dict-item]
        with pytest.raises(ModelError, match=rf"labels\.json: word_features.*{message}"):
            Classifier.load(tmp_path / "m")


# -- predictions --------------------------------------------------------------------------


class TestPredict:
    def test_one_prediction_per_item_with_every_head(self, tiny: Classifier) -> None:
        predictions = tiny.predict(TICKETS)
        assert len(predictions) == len(TICKETS)
        for prediction in predictions:
            assert prediction.model_version == tiny.version
            assert tuple(prediction.heads) == tiny.heads
            for head, answer in prediction.heads.items():
                assert tuple(answer.probabilities) == tiny.labels[head]
                assert sum(answer.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
                assert answer.confidence == max(answer.probabilities.values())
                assert answer.probabilities[answer.label] == answer.confidence

    def test_different_texts_get_different_probabilities(self, tiny: Classifier) -> None:
        first, second = tiny.predict(TICKETS[:2])
        assert first["queue"].probabilities != second["queue"].probabilities

    def test_empty_list(self, tiny: Classifier) -> None:
        assert tiny.predict([]) == []
        assert tiny.embed([]).shape == (0, tiny.embed(TICKETS[:1]).shape[1])

    @pytest.mark.parametrize(("size", "tokens"), [(1, 8192), (2, 8192), (3, 300), (64, 256)])
    def test_batched_equals_one_by_one(self, size: int, tokens: int) -> None:
        batched = Classifier.load(
            TINY_MODEL, threads=1, max_batch_size=size, max_batch_tokens=tokens
        )
        together = batched.predict(TICKETS)
        alone = [batched.predict([item])[0] for item in TICKETS]
        assert_same_predictions(together, alone, 1e-4)

    def test_order_is_kept_when_lengths_are_sorted_internally(self, tiny: Classifier) -> None:
        reversed_predictions = tiny.predict(TICKETS[::-1])
        assert_same_predictions(reversed_predictions[::-1], tiny.predict(TICKETS), 1e-6)

    def test_embeddings_are_unit_vectors_in_input_order(self, tiny: Classifier) -> None:
        vectors = tiny.embed(TICKETS[:4])
        assert vectors.dtype == np.float32
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert np.allclose(tiny.embed([TICKETS[2]])[0], vectors[2], atol=1e-5)
        predictions, together = tiny.predict_and_embed(TICKETS[:4])
        assert np.allclose(together, vectors, atol=1e-6)
        assert_same_predictions(predictions, tiny.predict(TICKETS[:4]), 1e-6)

    def test_embed_without_embedding_output(self, tmp_path: Path) -> None:
        build_graph_model(tmp_path / "m", ["input_ids"])
        with pytest.raises(ModelError, match="no embedding"):
            Classifier.load(tmp_path / "m").embed(TICKETS[:1])


class TestEdgeInputs:
    @pytest.mark.parametrize(
        "item", [TextInput("", ""), TextInput("  ", " \n\t "), TextInput("", b"")]
    )
    def test_empty_input_still_predicts(self, tiny: Classifier, item: TextInput) -> None:
        [prediction] = tiny.predict([item])
        [empty] = tiny.predict([TextInput("", "")])
        assert_same_predictions([prediction], [empty], 1e-6)

    def test_one_megabyte_text(self, tiny: Classifier) -> None:
        body = "The production database is unreachable and customers are affected. " * 15_000
        assert len(body) > 1_000_000
        [big] = tiny.predict([TextInput("Outage", body)])
        [capped] = tiny.predict([TextInput("Outage", body[:20_000])])
        assert_same_predictions([big], [capped], 1e-6)  # only the first max tokens count

    def test_html_with_script_and_style_reads_like_plain_text(self, tiny: Classifier) -> None:
        html = (
            "<html><head><style>.x{color:red}</style><script>var refund=1;</script></head>"
            "<body><p>My invoice is wrong.</p><p>Please correct it.</p></body></html>"
        )
        as_html = tiny.predict([TextInput("Invoice", html, "text/html")])
        as_text = tiny.predict([TextInput("Invoice", "My invoice is wrong.\nPlease correct it.")])
        assert_same_predictions(as_html, as_text, 1e-6)

    def test_quoted_reply_is_ignored(self, tiny: Classifier) -> None:
        quoted = (
            "The printer still jams.\n\n"
            "On Mon, 3 Jun 2024 at 09:00, Support <s@example.com> wrote:\n"
            "> Have you tried our refund portal? Billing and invoices are handled there."
        )
        with_quote = tiny.predict([TextInput("Printer", quoted)])
        without = tiny.predict([TextInput("Printer", "The printer still jams.")])
        assert_same_predictions(with_quote, without, 1e-6)

    @pytest.mark.parametrize("encoding", ["latin-1", "cp1252"])
    def test_non_utf8_bytes(self, tiny: Classifier, encoding: str) -> None:
        text = "Die Rechnung für März ist zu hoch, bitte prüfen Sie die Gebühren."
        from_bytes = tiny.predict([TextInput("Rechnung", text.encode(encoding))])
        from_text = tiny.predict([TextInput("Rechnung", text)])
        assert_same_predictions(from_bytes, from_text, 1e-6)

    def test_emoji(self, tiny: Classifier) -> None:
        [prediction] = tiny.predict([TextInput("Thanks 🎉", "Great service, thank you 😀👍")])
        assert sum(prediction["sentiment"].probabilities.values()) == pytest.approx(1.0, abs=1e-5)

    def test_inputs_are_capped_at_max_tokens(self, tiny: Classifier) -> None:
        [ids] = tiny.encode_texts([tiny.prepare(TextInput("x", "word " * 5000))])
        assert len(ids) == tiny.spec.max_tokens


# -- golden replay ------------------------------------------------------------------------


def golden_cases(model_dir: Path) -> list[dict[str, object]]:
    path = model_dir / "golden.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def golden_input(case: dict[str, object]) -> TextInput:
    if "body_hex" in case:
        body: str | bytes = bytes.fromhex(str(case["body_hex"]))
    elif "body_base64" in case:
        body = base64.b64decode(str(case["body_base64"]))
    else:
        body = str(case["body"])
    content_type = case.get("content_type")
    return TextInput(str(case["subject"]), body, str(content_type) if content_type else None)


def replay(model_dir: Path) -> None:
    model = Classifier.load(model_dir, threads=1)
    cases = golden_cases(model_dir)
    assert len(cases) >= 10
    predictions = model.predict([golden_input(case) for case in cases])
    for case, prediction in zip(cases, predictions, strict=True):
        expected = case["expected"]
        assert isinstance(expected, dict)
        for head, answer in expected.items():
            assert prediction[head].label == answer["label"]
            for label, probability in answer["probabilities"].items():
                assert prediction[head].probabilities[label] == pytest.approx(probability, abs=1e-3)


def test_golden_replay_tiny_model() -> None:
    replay(TINY_MODEL)


@pytest.mark.skipif(
    not (BUNDLED_MODEL / "golden.jsonl").is_file(), reason="no bundled model in model/"
)
def test_golden_replay_bundled_model() -> None:
    replay(BUNDLED_MODEL)


# -- pure helpers -------------------------------------------------------------------------


class TestBatchPlanning:
    def test_every_index_once_shortest_first(self) -> None:
        lengths = [5, 1, 9, 3, 3, 7]
        batches = list(plan_batches(lengths, max_size=2, max_tokens=1000))
        flat = [i for batch in batches for i in batch]
        assert sorted(flat) == list(range(len(lengths)))
        assert [lengths[i] for i in flat] == sorted(lengths)
        assert all(len(batch) <= 2 for batch in batches)

    def test_padded_token_budget(self) -> None:
        lengths = [10, 10, 10, 100, 100, 256]
        batches = list(plan_batches(lengths, max_size=64, max_tokens=256))
        for batch in batches:
            assert len(batch) * max(lengths[i] for i in batch) <= 256
        assert [sorted(b) for b in batches] == [[0, 1, 2], [3, 4], [5]]

    def test_a_text_longer_than_the_budget_goes_alone(self) -> None:
        assert list(plan_batches([300, 2], max_size=8, max_tokens=100)) == [[1], [0]]

    def test_empty(self) -> None:
        assert list(plan_batches([], max_size=8, max_tokens=100)) == []

    def test_pad(self) -> None:
        ids, mask = pad([[2, 5, 6], [2]])
        assert ids.tolist() == [[2, 5, 6], [2, 0, 0]]
        assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
        assert ids.dtype == mask.dtype == np.int64


class TestNumericHelpers:
    def test_softmax_sums_to_one_and_is_stable(self) -> None:
        probabilities = softmax(np.array([[1000.0, 1001.0, 999.0], [0.0, 0.0, 0.0]]))
        assert np.allclose(probabilities.sum(axis=1), 1.0)
        assert np.allclose(probabilities[1], 1 / 3)
        assert probabilities[0].argmax() == 1

    def test_temperature_flattens_and_sharpens(self) -> None:
        logits = np.array([2.0, 0.0])
        assert softmax(logits, 2.0)[0] < softmax(logits)[0] < softmax(logits, 0.5)[0]
        assert softmax(logits)[0] == pytest.approx(1 / (1 + np.exp(-2.0)))
        with pytest.raises(ValueError):
            softmax(logits, 0.0)

    def test_ece_is_zero_when_confidence_matches_accuracy(self) -> None:
        confidences = np.array([0.8] * 10)
        correct = np.array([1] * 8 + [0] * 2)
        assert expected_calibration_error(confidences, correct) == pytest.approx(0.0)

    def test_ece_known_value(self) -> None:
        # Bin (0.6, 0.667]: confidence 0.65, accuracy 0 -> gap 0.65, weight 1/2.
        # Bin (0.933, 1.0]: confidence 0.95, accuracy 1 -> gap 0.05, weight 1/2.
        value = expected_calibration_error(np.array([0.65, 0.95]), np.array([0, 1]))
        assert value == pytest.approx(0.5 * 0.65 + 0.5 * 0.05)

    def test_ece_edge_cases(self) -> None:
        assert expected_calibration_error(np.array([]), np.array([])) == 0.0
        with pytest.raises(ValueError):
            expected_calibration_error(np.array([0.5]), np.array([1, 0]))

    def test_precision_coverage(self) -> None:
        confidences = np.array([0.9, 0.8, 0.6, 0.3])
        correct = np.array([True, False, True, False])
        points = precision_coverage(confidences, correct, [0.0, 0.7, 0.95])
        assert [(p.coverage, p.precision, p.count) for p in points] == [
            (1.0, 0.5, 4),
            (0.5, 0.5, 2),
            (0.0, None, 0),
        ]

    def test_head_prediction(self) -> None:
        answer = head_prediction(("a", "b", "c"), np.array([0.2, 0.5, 0.3], dtype=np.float32))
        assert answer.label == "b"
        assert answer.confidence == pytest.approx(0.5)
        assert answer.probabilities == pytest.approx({"a": 0.2, "b": 0.5, "c": 0.3})


# -- the default thread count ---------------------------------------------------------------


class TestCpuLimit:
    @pytest.fixture(autouse=True)
    def four_cpus(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})

    def write(self, root: Path, relative: str, content: str) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)

    def limit(self, root: Path, cgroup: str = "0::/\n") -> int:
        proc = root / "proc_self_cgroup"
        proc.write_text(cgroup)
        return cpu.cpu_limit(cgroup_root=root / "cg", proc_self_cgroup=proc)

    def test_no_cgroup_files_uses_affinity(self, tmp_path: Path) -> None:
        assert self.limit(tmp_path) == 4

    def test_cgroup_v2_quota(self, tmp_path: Path) -> None:
        self.write(tmp_path, "cg/cpu.max", "200000 100000\n")
        assert self.limit(tmp_path) == 2

    def test_fractional_quota_rounds_down_but_not_below_one(self, tmp_path: Path) -> None:
        self.write(tmp_path, "cg/cpu.max", "150000 100000\n")
        assert self.limit(tmp_path) == 1
        self.write(tmp_path, "cg/cpu.max", "20000 100000\n")
        assert self.limit(tmp_path) == 1

    def test_unlimited_v2(self, tmp_path: Path) -> None:
        self.write(tmp_path, "cg/cpu.max", "max 100000\n")
        assert self.limit(tmp_path) == 4

    def test_quota_above_affinity_is_capped_by_affinity(self, tmp_path: Path) -> None:
        self.write(tmp_path, "cg/cpu.max", "800000 100000\n")
        assert self.limit(tmp_path) == 4

    def test_nested_v2_cgroup_and_ancestors(self, tmp_path: Path) -> None:
        self.write(tmp_path, "cg/kubepods/pod1/cpu.max", "max 100000\n")
        self.write(tmp_path, "cg/kubepods/cpu.max", "300000 100000\n")
        assert self.limit(tmp_path, "0::/kubepods/pod1\n") == 3

    def test_cgroup_v1_quota(self, tmp_path: Path) -> None:
        self.write(tmp_path, "cg/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "100000\n")
        self.write(tmp_path, "cg/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
        assert self.limit(tmp_path, "4:cpu,cpuacct:/docker/abc\n") == 1

    def test_cgroup_v1_unlimited(self, tmp_path: Path) -> None:
        self.write(tmp_path, "cg/cpu/cpu.cfs_quota_us", "-1\n")
        self.write(tmp_path, "cg/cpu/cpu.cfs_period_us", "100000\n")
        assert self.limit(tmp_path, "1:cpu:/\n") == 4

    def test_garbage_is_ignored(self, tmp_path: Path) -> None:
        self.write(tmp_path, "cg/cpu.max", "lots\n")
        assert self.limit(tmp_path) == 4

    def test_this_machine(self) -> None:
        assert cpu.cpu_limit() >= 1


def test_loading_the_model_without_a_writable_home_prints_only_json(tmp_path: Path) -> None:
    # HOME=/nonexistent, but made impossible to create even for root: a path below a file.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORT_")}
    env.update(HOME=str(blocker / "nonexistent"), PYTHONPATH=str(Path(__file__).parent.parent))
    script = (
        "from pathlib import Path\n"
        "from connector.classifier import Classifier\n"
        f"Classifier.load(Path({str(TINY_MODEL)!r}), threads=1)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    not_json = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            not_json.append(line)
    assert not_json == []
