import json

import pytest

from backend.datasets import load_labelled


def test_csv_tsv_jsonl(tmp_path):
    (tmp_path / "a.csv").write_text('text,label\n"hello, world",Positive\n,Negative\nbye,\n')
    (tmp_path / "a.tsv").write_text("id\tsentiment\ttweet\n1\tnegative\tmeh\n")
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "x", "label": ["A", "B"]}) + "\n\n")
    csv = load_labelled(tmp_path / "a.csv")
    assert csv.texts == ["hello, world"] and csv.labels == [["Positive"]]  # empty rows skipped
    tsv = load_labelled(tmp_path / "a.tsv", text_col="tweet", label_col="sentiment", label_map={"negative": "Neg"})
    assert tsv.texts == ["meh"] and tsv.labels == [["Neg"]]
    assert load_labelled(tmp_path / "a.jsonl").labels == [["A", "B"]]


def test_missing_columns_are_named(tmp_path):
    (tmp_path / "a.csv").write_text("body,y\nx,1\n")
    with pytest.raises(ValueError, match="'text' and 'label'"):
        load_labelled(tmp_path / "a.csv")


def test_label_studio_export_uses_latest_non_cancelled_annotation(tmp_path):
    export = [
        {"id": 1, "data": {"text": "good"}, "annotations": [
            {"result": [{"from_name": "sentiment", "type": "choices", "value": {"choices": ["Negative"]}}],
             "updated_at": "2026-01-01T00:00:00Z"},
            {"result": [{"from_name": "sentiment", "type": "choices", "value": {"choices": ["Positive"]}}],
             "updated_at": "2026-01-02T00:00:00Z"},
        ]},
        {"id": 2, "data": {"text": "skip"}, "annotations": [{"was_cancelled": True, "result": []}]},
        {"id": 3, "data": {"text": "none"}, "annotations": []},
    ]
    (tmp_path / "export.json").write_text(json.dumps(export))
    data = load_labelled(tmp_path / "export.json", control="sentiment")
    assert data.texts == ["good"] and data.labels == [["Positive"]]


def test_headerless_tsv_by_position_decodes_escapes(tmp_path):
    # SemEval's layout: id<TAB>label<TAB>text, no header, \\uXXXX escapes, tabs inside the text kept.
    (tmp_path / "semeval.tsv").write_text("1\tpositive\tI\\u2019m here\\u002c ok\n2\tnegative\tbad\tday\nbroken\n")
    data = load_labelled(tmp_path / "semeval.tsv", text_col="2", label_col="1")
    assert data.texts == ["I\u2019m here, ok", "bad\tday"] and data.labels == [["positive"], ["negative"]]


def test_line_aligned_text_and_labels_files(tmp_path):
    # TweetEval's layout: x_text.txt and x_labels.txt, one item per line.
    (tmp_path / "val_text.txt").write_text("good day \nawful\n")
    (tmp_path / "val_labels.txt").write_text("2\n0\n")
    data = load_labelled(tmp_path / "val_text.txt", label_map={"0": "Negative", "2": "Positive"})
    assert data.texts == ["good day", "awful"] and data.labels == [["Positive"], ["Negative"]]
    (tmp_path / "val_labels.txt").write_text("2\n")
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        load_labelled(tmp_path / "val_text.txt")
    (tmp_path / "notes.txt").write_text("x\n")
    with pytest.raises(ValueError, match="labels file"):
        load_labelled(tmp_path / "notes.txt")
