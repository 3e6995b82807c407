"""captionkit.bundle.layout: the two known bundle layouts' file names and how a folder's layout is recognised.

Oracles: the file names spelled out here as the CS231n assignment's bundle and captionkit's writer name them (the one
place in the suite that spells them, to check the table), and folders made by hand.
"""
from captionkit import layout as reexported
from captionkit.bundle.layout import LAYOUTS, REQUIRED_SPLITS, SPLITS, bundle_layout, bundle_paths, images_path


def test_the_assignments_names_are_the_cs231n_layout(tmp_path):
    paths = bundle_paths(tmp_path, layout="cs231n")
    assert {key: path.name for key, path in paths.items()} == {
        "captions": "coco2014_captions.h5", "vocab": "coco2014_vocab.json",
        "train_features": "train2014_vgg16_fc7_pca.h5", "val_features": "val2014_vgg16_fc7_pca.h5",
        "train_urls": "train2014_urls.txt", "val_urls": "val2014_urls.txt"}
    full = bundle_paths(tmp_path, pca_features=False, layout="cs231n")
    assert full["train_features"].name == "train2014_vgg16_fc7.h5"
    assert images_path(tmp_path, "val", layout="cs231n") == tmp_path / "val2014_images.h5"


def test_captionkit_layout_takes_pca_features_only_when_they_are_there(tmp_path):
    assert bundle_paths(tmp_path, layout="captionkit")["train_features"] == tmp_path / "train_features.h5"
    (tmp_path / "train_features_pca.h5").write_bytes(b"")
    assert bundle_paths(tmp_path, layout="captionkit")["train_features"] == tmp_path / "train_features_pca.h5"
    assert bundle_paths(tmp_path, pca_features=False, layout="captionkit")["val_features"] == \
        tmp_path / "val_features.h5"


def test_a_folders_layout_is_recognised_by_its_captions_file(tmp_path):
    assert bundle_layout(tmp_path) == "captionkit"  # empty: captionkit's own names
    (tmp_path / "coco2014_captions.h5").write_bytes(b"")
    assert bundle_layout(tmp_path) == "cs231n"
    assert bundle_paths(tmp_path)["vocab"] == tmp_path / "coco2014_vocab.json"
    (tmp_path / "captions.h5").write_bytes(b"")  # both: captionkit's own wins
    assert bundle_layout(tmp_path) == "captionkit" and images_path(tmp_path, "train").name == "train_images.h5"


def test_splits_and_every_layout_name_every_role():
    assert REQUIRED_SPLITS == ("train", "val") and SPLITS == ("train", "val", "test")
    roles = {"captions", "vocab", "features", "features_pca", "urls", "images"}
    assert {name: set(names) for name, names in LAYOUTS.items()} == {"captionkit": roles, "cs231n": roles}
    for names in LAYOUTS.values():
        per_split = [names[role].format(split="x") for role in roles if "{split}" in names[role]]
        assert len(set(per_split)) == len(per_split) == 4  # no two roles share a file


def test_test_split_paths_and_the_old_import_path(tmp_path):
    paths = bundle_paths(tmp_path, layout="captionkit", splits=SPLITS)
    assert paths["test_urls"] == tmp_path / "test_urls.txt"
    assert reexported.bundle_paths is bundle_paths and reexported.LAYOUTS is LAYOUTS
