"""captionkit.report: the gallery's data (per-picture scores, runs aligned by picture, worst first), the page's
escaping, and the folder it may write.

Oracles: captionkit.evaluation.evaluate on the same model and images (its corpus CIDEr-D is what the per-picture
scores must average to), the models' own decoding of each picture, Python's html.parser reading the page back, and
scores worked out by hand for captions equal to or disjoint from their references.
"""
import html
import json
from html.parser import HTMLParser

import numpy as np
import pytest

from captionkit.data import load_coco_data
from captionkit.evaluation import caption_text, evaluate
from captionkit.loading import load_model
from captionkit.report import check_folder
from captionkit.report.gallery import Caption, Picture, difference, split_gallery, worst_first
from captionkit.report.header import RunHeader
from captionkit.report.page import render_page
from captionkit.report.pictures import PictureFile
from captionkit.report.scores import picture_scores

HOSTILE_NAME = "<img src=x onerror=alert(1)>.png"
HOSTILE_CAPTION = "</table><script>alert(2)</script>"


class Reader(HTMLParser):
    """Start tags and text of a page, as an HTML parser sees them."""

    def __init__(self):
        super().__init__()
        self.tags, self.text, self.attributes = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes.extend(value for _, value in attrs if value is not None)

    def handle_data(self, data):
        self.text.append(data)


def read_page(text):
    reader = Reader()
    reader.feed(text)
    return reader


def test_a_caption_equal_to_its_references_scores_bleu_1_and_one_sharing_nothing_scores_0():
    references = {0: ["a red circle on the left", "a red circle"], 1: ["a blue square at the top"]}
    scores, corpus = picture_scores(references, {0: "a red circle on the left", 1: "green triangles everywhere"})
    assert scores[0]["BLEU-4"] == pytest.approx(1.0) and scores[1]["BLEU-4"] == pytest.approx(0.0, abs=1e-6)
    assert scores[1]["CIDEr-D"] == 0.0 and scores[0]["CIDEr-D"] > 0
    assert (scores[0]["CIDEr-D"] + scores[1]["CIDEr-D"]) / 2 == pytest.approx(corpus["CIDEr-D"], rel=1e-12)


@pytest.fixture(scope="module")
def two_models(three_runs, learnable):
    data = load_coco_data(learnable)
    return [load_model(run)[0] for run in three_runs[:2]], data


def test_per_picture_cider_averages_to_the_corpus_figure_evaluate_gives(two_models):
    models, data = two_models
    for beam in (1, 2):
        images, pictures, runs = split_gallery(models, data, "val", max_images=6, beam_size=beam)
        for k, (model, run) in enumerate(zip(models, runs)):
            expected = evaluate(model, data, "val", beam_size=beam, max_images=6)
            mean = np.mean([picture.captions[k].scores["CIDEr-D"] for picture in pictures])
            assert mean == pytest.approx(expected["CIDEr-D"], rel=1e-12, abs=1e-12)
            for name in ("BLEU-4", "CIDEr-D", "ROUGE-L", "perplexity"):
                assert run.corpus[name] == pytest.approx(expected[name], rel=1e-12)
    assert list(images) == list(range(6))


def test_several_runs_are_aligned_by_picture(two_models):
    models, data = two_models
    images, pictures, _ = split_gallery(models, data, "val", max_images=5)
    for image, picture in zip(images, pictures):
        assert picture.name == f"val image {image}"
        for model, caption in zip(models, picture.captions):
            own = model.sample(data["val_features"][[image]], max_length=data["val_captions"].shape[1] - 1)[0]
            assert caption.text == caption_text(own, data["idx_to_word"])
        assert difference(picture) == picture.captions[1].scores["CIDEr-D"] - picture.captions[0].scores["CIDEr-D"]


def _row(name, *ciders):
    return Picture(name, ["a reference"], [Caption("text", scores={"CIDEr-D": c, "BLEU-4": 0.0} if c is not None
                                                   else {}) for c in ciders])


def test_rows_start_worst_first_by_the_first_runs_cider_and_the_difference_has_one_rule_per_count():
    rows = [_row("a", 2.0, 1.0), _row("b", 0.5, 3.0), _row("c", None, 1.0), _row("d", 0.5, 0.0)]
    assert [row.name for row in worst_first(rows)] == ["b", "d", "a", "c"]  # ties keep their order; unscored last
    assert difference(rows[1]) == 2.5 and difference(rows[2]) is None and difference(_row("one", 1.0)) is None
    assert difference(_row("three", 1.0, 4.0, 2.5)) == 3.0  # more than two runs: how far apart they are


def test_every_text_from_runs_and_files_is_escaped():
    header = RunHeader(HOSTILE_NAME, [("lr", repr(HOSTILE_CAPTION)), (HOSTILE_CAPTION, "x")],
                       [("plots/run-1-loss.png", HOSTILE_CAPTION)])
    attention = Caption(HOSTILE_CAPTION, scores={"CIDEr-D": 0.5, "BLEU-4": 0.25}, words=[HOSTILE_CAPTION, "red"],
                        attention=np.array([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]]))
    picture = Picture(HOSTILE_NAME, [HOSTILE_CAPTION], [attention, Caption(None, error=HOSTILE_NAME)],
                      PictureFile(src="pictures/0000.png", link="http://example.org/a.jpg?x=\"1\"",
                                  note=HOSTILE_CAPTION))
    text = render_page(HOSTILE_CAPTION, HOSTILE_NAME, [header], [picture], [HOSTILE_NAME, "b<i>"], scored=True)
    page = read_page(text)
    assert page.tags.count("script") == 1 and page.tags.count("img") == 2  # its own script; the thumbnail, the plot
    assert "i" not in page.tags  # the run named b<i> is text
    shown = "".join(page.text)
    assert shown.count(HOSTILE_NAME) >= 3 and shown.count(HOSTILE_CAPTION) >= 4
    assert HOSTILE_CAPTION not in text.replace(html.escape(HOSTILE_CAPTION), "")
    # The attention weights reach the script as JSON in an attribute, read back whole.
    [attribute] = [value for value in page.attributes if value.startswith('{"grid"')]
    assert json.loads(attribute) == {"grid": [2, 2], "weights": [[0.1, 0.2, 0.3, 0.4], [0.25] * 4]}


def test_regions_that_are_no_square_grid_show_the_caption_without_a_map():
    caption = Caption("a red circle", words=["a", "red", "circle"], attention=np.full((3, 6), 1 / 6))
    text = render_page("t", "d", [], [Picture("p", [], [caption])], ["run"], scored=False)
    assert "data-attention" not in text and "a red circle" in text


def test_the_folder_is_new_empty_or_an_earlier_reports(tmp_path):
    check_folder(tmp_path / "new")
    check_folder(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=rf"{tmp_path}: already holds files that are not a captionkit report"):
        check_folder(tmp_path)
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "index.html").write_text(render_page("t", "d", [], [], ["run"], scored=False))
    check_folder(earlier)
    with pytest.raises(ValueError, match="not a directory"):
        check_folder(tmp_path / "notes.txt")
