"""Real-dataset loaders on tiny fixtures written in the official formats, and load_dataset."""

import json

import numpy as np
import pytest
from PIL import Image

from arrcoc_lab.data import ChartQA, DocVQA, TextVQA, load_dataset
from arrcoc_lab.evaluation.metrics import anls, relaxed_accuracy


def write_image(path, size=(40, 20), colour=(10, 200, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


@pytest.fixture
def docvqa(tmp_path):
    """val/val_v1.0.json with images under val/documents/, as in the official release."""
    root = tmp_path / "val"
    write_image(root / "documents" / "pybv0228_81.png")
    write_image(root / "documents" / "mxcj0037_1.png", colour=(0, 0, 255))
    data = {"dataset_name": "docvqa", "dataset_split": "val", "dataset_version": "1.0", "data": [
        {"questionId": 49153, "question": "What is the ‘actual’ value per 1000, during the year 1975?",
         "question_types": ["figure/diagram"], "image": "documents/pybv0228_81.png", "docId": 14465,
         "ucsf_document_id": "pybv0228", "ucsf_document_page_no": "81", "answers": ["0.28"],
         "data_split": "val"},
        {"questionId": 24580, "question": "What is the date mentioned?", "question_types": ["form"],
         "image": "documents/pybv0228_81.png", "docId": 14465, "ucsf_document_id": "pybv0228",
         "ucsf_document_page_no": "81", "answers": ["July 1, 1976", "1 July 1976"], "data_split": "val"},
        {"questionId": 57349, "question": "What is the title?", "question_types": ["layout"],
         "image": "documents/mxcj0037_1.png", "docId": 1, "ucsf_document_id": "mxcj0037",
         "ucsf_document_page_no": "1", "answers": ["REPORT"], "data_split": "val"}]}
    path = root / "val_v1.0.json"
    path.write_text(json.dumps(data))
    return path


def test_docvqa_keeps_all_answers_and_groups_images(docvqa):
    ds = DocVQA(docvqa)
    assert len(ds) == 3
    first, second, third = ds
    assert first.id == "docvqa/49153" and first.answer == "0.28" and first.dataset == "docvqa"
    assert second.answers == ("July 1, 1976", "1 July 1976")
    assert anls("1 july 1976", second.answers) == 1.0  # max over references
    assert first.scene_index == second.scene_index == 0 and third.scene_index == 1
    assert first.image.shape == (20, 40, 3) and tuple(first.image[0, 0]) == (10, 200, 30)
    assert (first.target, first.target_box, first.regions, first.difficulty) == ("global", None, [], "detail")
    assert len(DocVQA(docvqa, n=2)) == 2


def test_images_load_lazily_and_corrupt_ones_raise(docvqa):
    (docvqa.parent / "documents" / "mxcj0037_1.png").write_bytes(b"not a png")
    ds = DocVQA(docvqa)  # constructing does not decode
    assert ds[0].answer == "0.28"
    with pytest.raises(ValueError, match="cannot decode image .*mxcj0037_1.png"):
        ds[2]


def test_letterboxing_to_image_size(docvqa):
    image = DocVQA(docvqa, image_size=64)[0].image
    assert image.shape == (64, 64, 3)
    assert tuple(image[0, 32]) == (255, 255, 255)  # padding above the 2:1 page
    assert tuple(image[32, 32]) == (10, 200, 30)


def test_missing_image_corrupt_json_and_bad_format(docvqa, tmp_path):
    (docvqa.parent / "documents" / "mxcj0037_1.png").unlink()
    with pytest.raises(ValueError, match="1 image.* missing.*mxcj0037_1.png"):
        DocVQA(docvqa)
    with pytest.raises(ValueError, match="does not exist"):
        DocVQA(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"data": [')
    with pytest.raises(ValueError, match="not valid JSON"):
        DocVQA(broken)
    broken.write_text('[{"questionId": 1}]')
    with pytest.raises(ValueError, match='expected an object'):
        DocVQA(broken)
    broken.write_text('{"data": [{"questionId": 1, "image": "a.png"}]}')
    with pytest.raises(ValueError, match="missing field 'question'"):
        DocVQA(broken)


@pytest.fixture
def textvqa(tmp_path):
    write_image(tmp_path / "train_images" / "0054c91397f2fe05.jpg")
    answers = ["nokia"] * 6 + ["nokia phone"] * 3 + ["toshiba"]
    data = {"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": [
        {"question": "what is the brand of phone?", "image_id": "0054c91397f2fe05",
         "image_classes": ["Belt", "Headphones"], "flickr_original_url": "", "flickr_300k_url": "",
         "image_width": 1024, "image_height": 730, "answers": answers,
         "question_tokens": ["what", "is", "the", "brand", "of", "phone"], "question_id": 34602,
         "set_name": "val"}]}
    path = tmp_path / "TextVQA_0.5.1_val.json"
    path.write_text(json.dumps(data))
    return path


def test_textvqa_majority_answer_and_image_dir(textvqa, tmp_path):
    sample = TextVQA(textvqa)[0]
    assert sample.id == "textvqa/34602" and sample.answer == "nokia" and len(sample.answers) == 10
    moved = tmp_path / "elsewhere"
    (tmp_path / "train_images").rename(moved)
    with pytest.raises(ValueError, match="expected under .*train_images"):
        TextVQA(textvqa)
    assert TextVQA(textvqa, image_dir=moved)[0].image.shape == (20, 40, 3)


def test_test_split_without_answers_loads(textvqa):
    data = json.loads(textvqa.read_text())
    del data["data"][0]["answers"]
    textvqa.write_text(json.dumps(data))
    sample = TextVQA(textvqa)[0]
    assert (sample.answer, sample.answers) == ("", ())


@pytest.fixture
def chartqa(tmp_path):
    root = tmp_path / "test"
    write_image(root / "png" / "two_col_100.png")
    write_image(root / "png" / "multi_col_803.png")
    data = [{"imgname": "two_col_100.png", "query": "What's the value of the highest bar?", "label": "53.2"},
            {"imgname": "multi_col_803.png", "query": "Is the red line above the blue?", "label": "Yes"}]
    path = root / "test_human.json"
    path.write_text(json.dumps(data))
    return path


def test_chartqa_list_format(chartqa):
    first, second = ChartQA(chartqa)
    assert first.question == "What's the value of the highest bar?" and first.answer == "53.2"
    assert relaxed_accuracy("54", first.answer) == 1.0 and second.answer == "Yes"
    assert first.scene_index == 0 and second.scene_index == 1
    chartqa.write_text('{"data": []}')
    with pytest.raises(ValueError, match="expected a JSON list"):
        ChartQA(chartqa)


def test_load_dataset_specs(docvqa, textvqa, chartqa):
    assert len(load_dataset("scenebench:val", n=7)) == 7
    assert load_dataset("docsynth:test", n=6, image_size=512, patch_size=16)[0].image.shape == (512, 512, 3)
    assert load_dataset(f"docvqa:{docvqa}", n=1, image_size=32)[0].image.shape == (32, 32, 3)
    assert load_dataset(f"textvqa:{textvqa}")[0].answer == "nokia"
    assert len(load_dataset(f"chartqa:{chartqa}")) == 2


def test_load_dataset_errors_list_what_exists(tmp_path):
    with pytest.raises(ValueError, match="known: \\['scenebench', 'docsynth', 'docvqa', 'textvqa', 'chartqa'\\]"):
        load_dataset("coco:train")
    with pytest.raises(ValueError, match="unknown split 'dev'; known: \\['test', 'train', 'val'\\]"):
        load_dataset("scenebench:dev")
    with pytest.raises(ValueError, match="accepted: 'scenebench:<split>'"):
        load_dataset("scenebench")
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(f"docvqa:{tmp_path / 'missing.json'}")
