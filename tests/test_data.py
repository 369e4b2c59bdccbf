"""Dataset layer: every adapter on tiny synthetic files, the built-ins, fingerprints, splits, canvases and errors.

Offline and fast: synthetic data lives in tmp_path; built-ins skip when their package or ../shared/data is absent.
"""

import functools
import gzip
import io
import json
import os
import pickle
import shutil
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from facezoo.data import get_builtin, list_builtin, load_dataset, stratified_split
from facezoo.data.builtin import ANIMAL_CLASSES
from facezoo.data.canvas import render_canvases
from facezoo.data.idx import read_idx
from facezoo.data.safe_pickle import load_array_pickle
from facezoo.errors import FaceZooError

# ---------------------------------------------------------------------------------------------------------- helpers


def write_image(path, value, size=(4, 3), mode="L", fmt="PNG"):
    """A solid image of ``value`` (an int, or an RGB tuple), ``size`` = (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path, format=fmt)
    return path


def write_idx(path, array, compress):
    """IDX written by hand: 0, 0, type byte, ndim, big-endian dims, big-endian data."""
    type_byte = {np.uint8: 0x08, np.int32: 0x0C}[array.dtype.type]
    data = struct.pack(f">BBBB{array.ndim}I", 0, 0, type_byte, array.ndim, *array.shape)
    data += array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_hf_split(folder, texts, labels, names=None, n_shards=2):
    """A ``save_to_disk`` Dataset folder: dataset_info.json, state.json and Arrow *stream* shards."""
    folder.mkdir(parents=True)
    label_type = pa.int64() if names is not None or isinstance(labels[0], int) else pa.string()
    table = pa.table({"text": pa.array(texts, pa.string()), "label": pa.array(labels, label_type)})
    bounds = np.linspace(0, len(texts), n_shards + 1).astype(int)
    files = []
    for i in range(n_shards):
        files.append(f"data-{i:05d}-of-{n_shards:05d}.arrow")
        with pa.OSFile(str(folder / files[-1]), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table.slice(bounds[i], bounds[i + 1] - bounds[i]))
    label_feature = {"dtype": "int64", "_type": "Value"} if names is None else {"names": names, "_type": "ClassLabel"}
    info = {"features": {"text": {"dtype": "string", "_type": "Value"}, "label": label_feature}}
    (folder / "dataset_info.json").write_text(json.dumps(info))
    state = {"_data_files": [{"filename": f} for f in files], "_split": None, "_fingerprint": "x"}
    (folder / "state.json").write_text(json.dumps(state))
    return folder


@pytest.fixture
def image_folder(tmp_path):
    """cat/{a,b}.png (values 10, 20; b is RGB), dog/{c,d}.png (30, 40), plus hidden files to skip."""
    root = tmp_path / "pets"
    write_image(root / "cat" / "a.png", 10)
    write_image(root / "cat" / "b.png", (20, 21, 22), mode="RGB")
    write_image(root / "dog" / "c.png", 30)
    write_image(root / "dog" / "d.png", 40)
    (root / ".DS_Store").write_bytes(b"\0junk")
    (root / "cat" / ".hidden.png").write_bytes(b"not an image")
    return root


# ------------------------------------------------------------------------------------------------- image folders


def test_image_folder_orders_labels_and_loads_rgb(image_folder):
    ds = load_dataset(f"folder:{image_folder}")
    assert (ds.name, ds.task, ds.source) == ("pets", "image", f"folder:{image_folder}")
    assert ds.sample_ids.tolist() == ["cat/a.png", "cat/b.png", "dog/c.png", "dog/d.png"]
    assert ds.labels.tolist() == [0, 0, 1, 1] and ds.labels.dtype == np.int64
    assert ds.class_names == ("cat", "dog")
    assert ds.split_spec == "stratified:0.2"
    # 2 samples per class: exactly one goes to test
    assert sorted(ds.splits[:2].tolist()) == sorted(ds.splits[2:].tolist()) == ["test", "train"]
    grey, colour = ds.load(2), ds.load(1)
    assert (grey.mode, grey.size) == ("RGB", (4, 3)) and grey.getpixel((0, 0)) == (30, 30, 30)
    assert colour.getpixel((3, 2)) == (20, 21, 22)


def test_image_folder_detects_split_layout(tmp_path):
    for split, cls, value in [("train", "a", 1), ("train", "b", 2), ("test", "a", 3), ("test", "b", 4)]:
        write_image(tmp_path / "d" / split / cls / f"{value}.png", value)
    ds = load_dataset(f"folder:{tmp_path / 'd'}")
    assert ds.split_spec == "given"
    assert ds.sample_ids.tolist() == ["test/a/3.png", "test/b/4.png", "train/a/1.png", "train/b/2.png"]
    assert ds.splits.tolist() == ["test", "test", "train", "train"]
    assert ds.labels.tolist() == [0, 1, 0, 1] and ds.class_names == ("a", "b")
    assert ds.subset("train").load(1).getpixel((0, 0)) == (2, 2, 2)


def test_fingerprint_ignores_location_mtime_and_hidden_files(image_folder, tmp_path):
    before = load_dataset(f"folder:{image_folder}")
    moved = tmp_path / "elsewhere" / "pets"
    shutil.copytree(image_folder, moved)
    os.utime(moved / "cat" / "a.png", (1_000_000, 1_000_000))
    (moved / "dog" / ".thumbs").write_bytes(b"x")
    after = load_dataset(f"folder:{moved}")
    assert after.fingerprint == before.fingerprint
    assert after.splits.tolist() == before.splits.tolist()
    assert len(before.fingerprint) == 32


def test_fingerprint_changes_with_a_byte_a_label_or_the_split_spec(image_folder, tmp_path):
    base = load_dataset(f"folder:{image_folder}").fingerprint
    assert load_dataset(f"folder:{image_folder}", test_fraction=0.5).fingerprint != base
    img = Image.open(image_folder / "dog" / "d.png").copy()
    img.putpixel((0, 0), 41)
    img.save(image_folder / "dog" / "d.png")
    assert load_dataset(f"folder:{image_folder}").fingerprint != base
    # the same files and paths under other labels: a table whose label column alone differs
    write_image(tmp_path / "t" / "x.png", 1), write_image(tmp_path / "t" / "y.png", 2)
    write_image(tmp_path / "t" / "z.png", 3), write_image(tmp_path / "t" / "w.png", 4)
    fps = []
    for labels in (["a", "a", "b", "b"], ["a", "b", "a", "b"], ["a", "a", "b", "b"]):
        table = pa.table({"file": ["x.png", "y.png", "z.png", "w.png"], "label": labels})
        pq.write_table(table, tmp_path / "t" / "t.parquet")
        fps.append(load_dataset(f"table:{tmp_path / 't' / 't.parquet'}", path_column="file").fingerprint)
    assert fps[0] != fps[1] and fps[0] == fps[2]


def test_fingerprint_is_the_same_on_every_machine(tmp_path):
    """A golden value: content-defined (SHA-256 over sample ids, texts, labels, splits), so it never varies."""
    (tmp_path / "golden.txt").write_bytes(b"1 good\n0 bad\n1 fine\n0 awful\n")
    ds = load_dataset(f"lines:{tmp_path / 'golden.txt'}")
    assert ds.fingerprint == GOLDEN_FINGERPRINT
    assert ds.splits.tolist() == GOLDEN_SPLITS


GOLDEN_FINGERPRINT = "e245e9c95d5fd66221e08af3b474b334"
GOLDEN_SPLITS = ["test", "test", "train", "train"]


def test_corrupt_and_non_image_files_are_all_listed_in_one_error(image_folder):
    data = (image_folder / "dog" / "c.png").read_bytes()
    (image_folder / "dog" / "c.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(FaceZooError, match=r"1 unreadable image\(s\): dog/c\.png; replace or remove them"):
        load_dataset(f"folder:{image_folder}")
    (image_folder / "cat" / "notes.txt").write_text("hello")
    with pytest.raises(FaceZooError, match=r"2 unreadable image\(s\): cat/notes\.txt, dog/c\.png;"):
        load_dataset(f"folder:{image_folder}")


def test_image_folder_layout_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FaceZooError, match="no samples found"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    write_image(tmp_path / "one" / "only" / "a.png", 1), write_image(tmp_path / "one" / "only" / "b.png", 2)
    with pytest.raises(FaceZooError, match="every sample has the class 'only'; .* at least 2 classes"):
        load_dataset(f"folder:{tmp_path / 'one'}")
    write_image(tmp_path / "top" / "a" / "x.png", 1), write_image(tmp_path / "top" / "stray.png", 2)
    with pytest.raises(FaceZooError, match=r"top/stray\.png: a file at the top of an image folder"):
        load_dataset(f"folder:{tmp_path / 'top'}")
    with pytest.raises(FaceZooError, match="not a folder"):
        load_dataset(f"folder:{tmp_path / 'missing'}")


# ----------------------------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_parses_header_and_data(tmp_path, compress):
    images = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    ints = np.array([[-5, 70000], [3, 0]], dtype=np.int32)
    assert np.array_equal(read_idx(write_idx(tmp_path / "i", images, compress)), images)
    out = read_idx(write_idx(tmp_path / "n", ints, compress))
    assert out.dtype == np.int32 and out.dtype.isnative and np.array_equal(out, ints)


def test_idx_dataset(tmp_path):
    images = np.arange(6 * 2 * 2, dtype=np.uint8).reshape(6, 2, 2)
    write_idx(tmp_path / "imgs.idx3.gz", images, True)
    write_idx(tmp_path / "labels.idx1", np.array([2, 0, 1, 2, 0, 10], np.uint8), False)
    ds = load_dataset(f"idx:{tmp_path / 'imgs.idx3.gz'},{tmp_path / 'labels.idx1'}")
    assert ds.name == "imgs" and ds.class_names == ("0", "1", "2", "10")
    assert ds.labels.tolist() == [2, 0, 1, 2, 0, 3] and ds.sample_ids.tolist() == ["0", "1", "2", "3", "4", "5"]
    sample = ds.load(4)
    assert sample.mode == "L" and np.array_equal(np.asarray(sample), images[4])


def test_idx_errors(tmp_path):
    images = write_idx(tmp_path / "i", np.zeros((3, 2, 2), np.uint8), False)
    labels = write_idx(tmp_path / "l", np.array([0, 1], np.uint8), False)
    with pytest.raises(FaceZooError, match=r"2 labels for 3 images"):
        load_dataset(f"idx:{images},{labels}")
    (tmp_path / "t").write_bytes(images.read_bytes()[:-1])
    with pytest.raises(FaceZooError, match=r"header says shape \(3, 2, 2\) of uint8 \(12 bytes\) but .* 11 bytes"):
        read_idx(tmp_path / "t")
    (tmp_path / "bad").write_bytes(b"\x89PNG....")
    with pytest.raises(FaceZooError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    with pytest.raises(FaceZooError, match=r"expected idx:<images path>,<labels path>"):
        load_dataset(f"idx:{images}")


# -------------------------------------------------------------------------------------------------------- tables


def test_csv_text_table_with_split_column(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text('body,stars,part\n"great, really",5,train\nawful,1,train\nok,3,test\n"meh\nindeed",1,test\n')
    ds = load_dataset(f"table:{path}", text_column="body", label_column="stars", split_column="part")
    assert (ds.name, ds.task, ds.split_spec) == ("reviews", "text", "given")
    assert ds.refs == ["great, really", "awful", "ok", "meh\nindeed"]
    assert ds.class_names == ("1", "3", "5") and ds.labels.tolist() == [2, 0, 1, 0]
    assert ds.splits.tolist() == ["train", "train", "test", "test"]
    assert ds.sample_ids.tolist() == ["row-1", "row-2", "row-3", "row-4"]
    assert ds.load(3) == "meh\nindeed"


def test_tsv_table_numeric_labels_sort_numerically(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text('text\tlabel\na\t10\nhe said "hi\t2\nc\t10\nd\t2\n')
    ds = load_dataset(f"table:{path}")
    assert ds.refs == ["a", 'he said "hi', "c", "d"]  # TSV has no quoting
    assert ds.class_names == ("2", "10") and ds.labels.tolist() == [1, 0, 1, 0]
    assert ds.split_spec == "stratified:0.2"


def test_parquet_image_table(tmp_path):
    write_image(tmp_path / "img" / "x.png", 7), write_image(tmp_path / "img" / "y.png", 8)
    write_image(tmp_path / "img" / "z.png", 9)
    table = pa.table({"file": ["img/x.png", "img/./y.png", "img/z.png"], "y": [1, 0, 1]})
    pq.write_table(table, tmp_path / "t.parquet")
    ds = load_dataset(f"table:{tmp_path / 't.parquet'}", path_column="file", label_column="y")
    assert ds.task == "image" and ds.sample_ids.tolist() == ["img/x.png", "img/y.png", "img/z.png"]
    assert ds.labels.tolist() == [1, 0, 1] and ds.load(1).getpixel((0, 0)) == (8, 8, 8)


def test_table_errors_name_the_file_row_and_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,label\na,x\nb,\n")
    with pytest.raises(FaceZooError, match=r"t\.csv: no column 'body' \(text_column\); the columns are 'text', 'lab"):
        load_dataset(f"table:{path}", text_column="body")
    with pytest.raises(FaceZooError, match=r"t\.csv: row 2: no label in column 'label'"):
        load_dataset(f"table:{path}")
    path.write_text("path,label\n../secret.png,a\n")
    with pytest.raises(FaceZooError, match=r"row 1: image path '\.\./secret\.png' is not inside"):
        load_dataset(f"table:{path}", path_column="path")
    path.write_text("path,label\nmissing.png,a\n")
    with pytest.raises(FaceZooError, match=r"row 1: image 'missing\.png' not found"):
        load_dataset(f"table:{path}", path_column="path")
    with pytest.raises(FaceZooError, match="unknown table format"):
        load_dataset(f"table:{tmp_path / 't.xlsx'}")


# ---------------------------------------------------------------------------------------------------- line files


def test_lines_file_parses_labels_ids_and_skips_blank_lines(tmp_path):
    (tmp_path / "f.txt").write_text("pos good movie\nneg bad movie  \n\npos  great\nneg awful\r\n")
    ds = load_dataset(f"lines:{tmp_path / 'f.txt'}", name="reviews")
    assert ds.name == "reviews" and ds.refs == ["good movie", "bad movie", "great", "awful"]
    assert ds.class_names == ("neg", "pos") and ds.labels.tolist() == [1, 0, 1, 0]
    assert ds.sample_ids.tolist() == ["f.txt:1", "f.txt:2", "f.txt:4", "f.txt:5"]


def test_lines_decoding_falls_back_to_windows_1252(tmp_path):
    (tmp_path / "legacy").write_bytes(b"1 caf\xe9 \x96 \x93ok\x94\n0 na\xefve\n")
    (tmp_path / "utf8").write_bytes("\ufeff1 caf\u00e9 a\u0085b\n0 x\u2028y\n".encode())
    assert load_dataset(f"lines:{tmp_path / 'legacy'}").refs == ["caf\u00e9 \u2013 \u201cok\u201d", "na\u00efve"]
    # a BOM is dropped, and NEL / LINE SEPARATOR inside a sentence do not split it
    assert load_dataset(f"lines:{tmp_path / 'utf8'}").refs == ["caf\u00e9 a\u0085b", "x\u2028y"]


def test_lines_label_without_text_fails_or_is_skipped(tmp_path):
    (tmp_path / "f").write_text("1 fine\n0 \n1 good\n0 bad\n")
    with pytest.raises(FaceZooError, match=r"f:2: no text after the label '0'"):
        load_dataset(f"lines:{tmp_path / 'f'}")
    assert load_dataset(f"lines:{tmp_path / 'f'}", skip_empty=True).sample_ids.tolist() == ["f:1", "f:3", "f:4"]


def test_lines_split_files_are_given_splits(tmp_path):
    (tmp_path / "a.train").write_text("1 x\n0 y\n")
    (tmp_path / "a.test").write_text("0 z\n")
    ds = load_dataset(f"lines:{tmp_path}", name="a", split_files={"train": "a.train", "test": "a.test"})
    assert ds.split_spec == "given" and ds.splits.tolist() == ["train", "train", "test"]
    assert ds.sample_ids.tolist() == ["a.train:1", "a.train:2", "a.test:1"] and ds.refs == ["x", "y", "z"]


# --------------------------------------------------------------------------------------------- Hugging Face disk


def test_hf_disk_dataset_with_class_label_names(tmp_path):
    texts = [f"t{i}" for i in range(10)]
    labels = [0, 1] * 5
    write_hf_split(tmp_path / "hf", texts, labels, names=["pos", "neg"], n_shards=3)
    ds = load_dataset(f"hf-disk:{tmp_path / 'hf'}")
    assert ds.refs == texts and ds.labels.tolist() == labels
    assert ds.class_names == ("pos", "neg")  # the ClassLabel order, not sorted
    assert ds.sample_ids.tolist() == [str(i) for i in range(10)] and ds.split_spec == "stratified:0.2"


def test_hf_disk_dataset_dict_splits(tmp_path):
    root = tmp_path / "dd"
    write_hf_split(root / "train", ["a", "b", "c", "d"], ["x", "y", "x", "y"])
    write_hf_split(root / "test", ["e", "f"], ["y", "x"], n_shards=1)
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    ds = load_dataset(f"hf-disk:{root}")
    assert ds.split_spec == "given" and ds.splits.tolist() == ["train"] * 4 + ["test"] * 2
    assert ds.sample_ids.tolist() == ["train/0", "train/1", "train/2", "train/3", "test/0", "test/1"]
    assert ds.class_names == ("x", "y") and ds.labels.tolist() == [0, 1, 0, 1, 1, 0]
    assert load_dataset(f"hf-disk:{root}", splits=["test"]).refs == ["e", "f"]
    with pytest.raises(FaceZooError, match="no split 'val'; it has train, test"):
        load_dataset(f"hf-disk:{root}", splits=["val"])


def test_hf_disk_errors(tmp_path):
    write_hf_split(tmp_path / "u", ["a", "b", "c"], [0, -1, 1], names=["n", "p"], n_shards=1)
    with pytest.raises(FaceZooError, match=r"u: row 1: label -1 is not a class of 'label'"):
        load_dataset(f"hf-disk:{tmp_path / 'u'}")
    with pytest.raises(FaceZooError, match=r"data-00000-of-00001\.arrow: no column 'sentence'"):
        load_dataset(f"hf-disk:{tmp_path / 'u'}", text_column="sentence")
    (tmp_path / "dd").mkdir()
    (tmp_path / "dd" / "dataset_dict.json").write_text(json.dumps({"splits": ["../u"]}))
    with pytest.raises(FaceZooError, match=r"split name '\.\./u' is not allowed"):
        load_dataset(f"hf-disk:{tmp_path / 'dd'}")
    (tmp_path / "plain").mkdir()
    with pytest.raises(FaceZooError, match="not a save_to_disk folder"):
        load_dataset(f"hf-disk:{tmp_path / 'plain'}")


# -------------------------------------------------------------------------------------------------- segmentation


def write_segmentation(root, masks, classes="bg\nfg\n", image_size=None):
    """images/<i>.png (RGB, value i) and masks/<i>.png (mode L) for each mask array."""
    for i, mask in enumerate(masks):
        h, w = image_size or mask.shape
        write_image(root / "images" / f"{i}.png", (i, i, i), size=(w, h), mode="RGB")
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(mask, np.uint8)).save(root / "masks" / f"{i}.png")
    if classes is not None:
        (root / "classes.txt").write_text(classes)
    return root


def test_segmentation_folder(tmp_path):
    masks = [np.array([[0, 1, 255], [1, 1, 0]]), np.array([[1, 0, 0], [0, 0, 255]])]
    ds = load_dataset(f"segmentation:{write_segmentation(tmp_path / 'seg', masks)}")
    assert (ds.task, ds.class_names, ds.ignore_index) == ("segmentation", ("bg", "fg"), 255)
    assert ds.labels.tolist() == [-1, -1] and ds.sample_ids.tolist() == ["images/0.png", "images/1.png"]
    image, mask = ds.load(1)
    assert (image.mode, image.size, image.getpixel((0, 0))) == ("RGB", (3, 2), (1, 1, 1))
    assert mask.dtype == np.int64 and np.array_equal(mask, masks[1])


def test_segmentation_class_names_default_and_palette_masks(tmp_path):
    root = write_segmentation(tmp_path / "s", [np.array([[0, 2], [3, 255]])], classes=None)
    palette = Image.fromarray(np.array([[1, 0], [0, 0]], np.uint8)).convert("P")
    write_image(root / "images" / "p.png", (0, 0, 0), size=(2, 2), mode="RGB")
    palette.save(root / "masks" / "p.png")
    ds = load_dataset(f"segmentation:{root}")
    assert ds.class_names == ("class_0", "class_1", "class_2", "class_3")
    assert ds.load(1)[1].tolist() == [[1, 0], [0, 0]]


def test_segmentation_errors(tmp_path):
    root = write_segmentation(tmp_path / "a", [np.zeros((4, 4)), np.ones((4, 4))], image_size=(6, 8))
    with pytest.raises(FaceZooError, match=r"a/images/0\.png: mask is 4×4, image is 6×8$"):
        load_dataset(f"segmentation:{root}")
    root = write_segmentation(tmp_path / "b", [np.zeros((2, 2)), np.array([[0, 7], [1, 255]])])
    with pytest.raises(FaceZooError, match=r"b/masks/1\.png: mask value 7 is neither a class \(0\.\.1 in classes"):
        load_dataset(f"segmentation:{root}")
    root = write_segmentation(tmp_path / "c", [np.zeros((2, 2)), np.ones((2, 2))])
    (root / "masks" / "1.png").unlink()
    with pytest.raises(FaceZooError, match=r"c/images/1\.png: no file with the stem '1' in masks/"):
        load_dataset(f"segmentation:{root}")
    root = write_segmentation(tmp_path / "d", [np.zeros((2, 2))])
    write_image(root / "masks" / "0.png", (0, 1, 0), size=(2, 2), mode="RGB")
    with pytest.raises(FaceZooError, match="masks must be single-channel PNGs"):
        load_dataset(f"segmentation:{root}")


# ------------------------------------------------------------------------------------------------------ canvases


def test_render_canvases_masks_label_each_digit_pixel():
    digits = np.full((3, 6, 6), 50, np.uint8)
    digits[:, 1:5, 1:5] = 200  # bright core: the only pixels above the threshold
    labels = np.array([4, 7, 9])
    images, masks, placements = render_canvases(
        digits, labels, n_images=30, size=20, digits_per_image=(1, 3), seed=1, threshold=127)
    assert images.shape == masks.shape == (30, 20, 20) and set(np.unique(masks)) <= {4, 7, 9, 10}
    assert {len(p) for p in placements} == {1, 2, 3}
    for image, mask, placed in zip(images, masks, placements, strict=True):
        covered = np.zeros((20, 20), bool)
        for d, top, left in placed:
            box = (slice(top, top + 6), slice(left, left + 6))
            assert not covered[box].any()  # no overlap
            covered[box] = True
            assert np.array_equal(image[box], digits[d])
            assert np.array_equal(mask[box], np.where(digits[d] > 127, labels[d], 10))
        assert (image[~covered] == 0).all() and (mask[~covered] == 10).all()


def test_mnist_canvas_is_deterministic_and_masks_match_pixels():
    options = {"n_images": 6, "size": 64, "digits_per_image": (1, 3), "digit_source": "sklearn"}
    a, b = load_dataset("builtin:mnist-canvas", **options), load_dataset("builtin:mnist-canvas", **options)
    assert a.fingerprint == b.fingerprint
    assert a.source == "builtin:mnist-canvas (digits: scikit-learn digits upscaled 3×)"
    assert a.class_names == (*map(str, range(10)), "background") and a.task == "segmentation"
    for i in range(len(a)):
        (image_a, mask_a), (image_b, mask_b) = a.load(i), b.load(i)
        assert np.array_equal(np.asarray(image_a), np.asarray(image_b)) and np.array_equal(mask_a, mask_b)
        pixels = np.asarray(image_a)
        assert image_a.mode == "RGB" and pixels.shape == (64, 64, 3) and mask_a.shape == (64, 64)
        assert set(np.unique(mask_a)) <= set(range(11)) and (mask_a < 10).any()
        assert np.array_equal(pixels[..., 0] > 127, mask_a != 10)
    assert load_dataset("builtin:mnist-canvas", seed=1, **options).fingerprint != a.fingerprint


def test_cifar_canvas_labels_every_pixel_of_each_pasted_object():
    if get_builtin("shared:cifar10-canvas").unavailable():
        pytest.skip("../shared/data is absent")
    a = load_dataset("shared:cifar10-canvas", n_images=8, size=64)
    assert a.fingerprint == load_dataset("shared:cifar10-canvas", n_images=8, size=64).fingerprint
    for i in range(len(a)):
        image, mask = a.load(i)
        pixels = np.asarray(image)
        assert image.mode == "RGB" and pixels.shape == (64, 64, 3) and mask.shape == (64, 64)
        objects = mask != 10
        assert objects.sum() % (32 * 32) == 0 and objects.any()  # whole 32×32 rectangles
        assert (pixels[~objects] == 0).all()  # black canvas around them
    images = np.stack([np.zeros((32, 32, 3), np.uint8) + 7, np.zeros((32, 32, 3), np.uint8) + 9])
    _, masks, placements = render_canvases(images, np.array([3, 5]), n_images=2, size=40, threshold=None,
                                           digits_per_image=1, background=10)
    for mask, ((d, top, left),) in zip(masks, placements, strict=True):
        assert (mask[top:top + 32, left:left + 32] == [3, 5][d]).all() and (mask == 10).sum() == 40 * 40 - 32 * 32


# ---------------------------------------------------------------------------------------------- stratified split


def test_stratified_split_is_deterministic_and_independent_of_order():
    rng = np.random.default_rng(0)
    ids = np.array([f"s{i}" for i in range(200)])
    labels = rng.integers(0, 3, 200)
    out = stratified_split(ids, labels, 0.2, seed="abc")
    perm = rng.permutation(200)
    permuted = stratified_split(ids[perm], labels[perm], 0.2, seed="abc")
    assert dict(zip(ids[perm], permuted, strict=True)) == dict(zip(ids, out, strict=True))
    assert np.array_equal(stratified_split(ids, labels, 0.2, seed="abc"), out)
    for k in range(3):
        assert (out[labels == k] == "test").sum() == round(0.2 * (labels == k).sum())
    assert not np.array_equal(stratified_split(ids, labels, 0.2, seed="other"), out)


# ---------------------------------------------------------------------------------------------------- built-ins

# key: (N, number of classes, split sizes), measured on the pinned packages and ../shared/data
BUILTINS = {
    "builtin:20newsgroups": (18821, 20, {"test": 7528, "train": 11293}),
    "builtin:20ng-super6": (18821, 6, {"test": 7528, "train": 11293}),
    "builtin:bbc-news": (2225, 5, {"test": 444, "train": 1781}),
    "builtin:elpv": (2624, 4, {"test": 525, "train": 2099}),
    "builtin:animal-mnist": (10000, 10, {"test": 2000, "train": 8000}),
    "builtin:digits": (1797, 10, {"test": 359, "train": 1438}),
    "builtin:mnist-5k": (5000, 10, {"test": 1000, "train": 4000}),
    "builtin:mnist-canvas": (500, 11, {"test": 100, "train": 400}),
    "builtin:reuters-r52": (9100, 52, {"test": 2568, "train": 6532}),
    "builtin:reuters-r8": (7674, 8, {"test": 2189, "train": 5485}),
    "builtin:rotten-tomatoes": (4866, 2, {"test": 973, "train": 3893}),
    "shared:cifar10-canvas": (500, 11, {"test": 100, "train": 400}),
    "shared:cifar10-test": (10000, 10, {"test": 2000, "train": 8000}),
    "shared:cr": (3771, 2, {"test": 754, "train": 3017}),
    "shared:mnist-test": (10000, 10, {"test": 2000, "train": 8000}),
    "shared:mpqa": (10603, 2, {"test": 2120, "train": 8483}),
    "shared:mr": (10662, 2, {"test": 2132, "train": 8530}),
    "shared:sst2": (9613, 2, {"dev": 872, "test": 1821, "train": 6920}),
    "shared:subj": (10000, 2, {"test": 2000, "train": 8000}),
}


def test_every_builtin_is_listed_with_a_description():
    assert set(list_builtin()) == set(BUILTINS)
    assert all(description and "\n" not in description for description in list_builtin().values())


@functools.cache  # ELPV decodes 2624 PNGs (~6 s): once per session
def _load_available(key):
    return load_dataset(key)


def load_builtin(key):
    reason = get_builtin(key).unavailable()
    if reason is not None:
        pytest.skip(f"{key} unavailable here: {reason}")
    return _load_available(key)


@pytest.mark.parametrize("key", sorted(BUILTINS))
def test_builtin_sizes_and_first_sample(key):
    ds = load_builtin(key)
    n, k, splits = BUILTINS[key]
    assert (len(ds), len(ds.class_names), ds.describe()["splits"]) == (n, k, splits)
    assert ds.name == key.partition(":")[2] and ds.source.startswith(key)
    sample = ds.load(0)
    if ds.task == "text":
        assert isinstance(sample, str) and sample.strip()
    elif ds.task == "image":
        assert isinstance(sample, Image.Image)
    else:
        assert isinstance(sample[0], Image.Image) and sample[1].shape == sample[0].size[::-1]


def test_builtin_samples():
    digits = load_builtin("builtin:digits")
    assert digits.load(0).size == (8, 8) and np.asarray(digits.load(0)).max() == round(15 * 255 / 16)
    animals = load_builtin("builtin:animal-mnist")
    assert animals.class_names == ANIMAL_CLASSES and animals.describe()["class_counts"]["zebra"] == 1000
    assert animals.load(0).mode == "L" and animals.load(0).size == (28, 28)


def test_shared_samples():
    mnist = load_builtin("shared:mnist-test")
    assert mnist.labels[:3].tolist() == [7, 2, 1] and mnist.load(0).mode == "L"
    cifar = load_builtin("shared:cifar10-test")
    assert cifar.sample_ids[0] == "airplane/0000.jpg" and cifar.load(0).size == (32, 32)
    mr = load_builtin("shared:mr")  # Windows-1252: 0x97 is an em dash, and no C1 control characters remain
    assert sum("\u2014" in t for t in mr.refs) > 0 and not any(0x80 <= ord(c) <= 0x9F for t in mr.refs for c in t)


def test_rotten_tomatoes_and_orange_corpora():
    rotten = load_builtin("builtin:rotten-tomatoes")
    assert rotten.describe()["class_counts"] == {"fresh": 2455, "rotten": 2411}  # plot summaries left out
    news = load_builtin("builtin:20newsgroups")
    assert news.class_names[0] == "alt.atheism" and news.sample_ids[0] == "train/0"
    assert news.load(0).startswith("alt atheism faq atheist resources")


def test_benchmark_corpora_of_issue_14():
    """The benchmark's K >= 4 additions (configs/benchmark/requirements.txt): labels against the packages' files."""
    news, super6 = load_builtin("builtin:20newsgroups"), load_builtin("builtin:20ng-super6")
    assert super6.refs == news.refs and super6.sample_ids.tolist() == news.sample_ids.tolist()
    naive = {"comp": "comp", "rec": "rec", "sci": "sci", "misc": "forsale", "alt": "religion", "soc": "religion"}
    for group, topic in zip(np.array(news.class_names)[news.labels], np.array(super6.class_names)[super6.labels],
                            strict=True):
        first = group.split(".")[0]
        assert topic == naive.get(first, "religion" if group.startswith("talk.religion") else "politics"), group
    bbc = load_builtin("builtin:bbc-news")
    assert bbc.describe()["class_counts"] == {"business": 510, "entertainment": 386, "politics": 417, "sports": 511,
                                              "tech": 401}
    assert bbc.sample_ids[0] == "business/001.txt" and bbc.load(0).startswith("Ad sales boost Time Warner profit")


def test_elpv_labels_are_the_defect_probabilities():
    cells = load_builtin("builtin:elpv")
    assert cells.describe()["class_counts"] == {"defect-p0.00": 1508, "defect-p0.33": 295, "defect-p0.67": 106,
                                                "defect-p1.00": 715}
    rows = [line.split() for line in (get_builtin("builtin:elpv").locate()).read_text().splitlines()]
    by_file = {path: round(float(p) * 3) for path, p, _ in rows}
    assert [by_file[i] for i in cells.sample_ids[:50]] == cells.labels[:50].tolist()
    assert cells.load(0).size == (300, 300)


# ----------------------------------------------------------------------------------------------- safety and errors


def test_array_pickles_load_and_anything_else_is_refused(tmp_path):
    array = np.arange(6, dtype=np.int64).reshape(2, 3)
    (tmp_path / "ok.gz").write_bytes(gzip.compress(pickle.dumps(array)))
    assert np.array_equal(load_array_pickle(tmp_path / "ok.gz"), array)

    class Exploit:
        def __reduce__(self):
            return os.system, ("echo pwned",)

    (tmp_path / "evil").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(FaceZooError, match=r"refusing to unpickle (posix|nt)\.system"):
        load_array_pickle(tmp_path / "evil")
    (tmp_path / "dict").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(FaceZooError, match="holds dict, not a numeric NumPy array"):
        load_array_pickle(tmp_path / "dict")


def test_loaders_pickle_for_dataloader_workers(image_folder):
    folder = load_dataset(f"folder:{image_folder}")
    assert pickle.loads(pickle.dumps(folder.loader))(folder.refs[2]).getpixel((0, 0)) == (30, 30, 30)
    canvas = load_dataset("builtin:mnist-canvas", n_images=2, digit_source="sklearn")
    _, mask = pickle.loads(pickle.dumps(canvas.loader))(canvas.refs[1])
    assert np.array_equal(mask, canvas.load(1)[1])


@pytest.mark.parametrize("bad", ["../x", "a/b", "x'y", 'x"y', "", ".hidden", "a..b", "a b", "x" * 101])
def test_bad_dataset_names_are_refused(bad):
    with pytest.raises(FaceZooError, match="is not allowed"):
        load_dataset("builtin:digits", name=bad)


def test_bad_sources_and_options():
    with pytest.raises(FaceZooError, match="expected <kind>:<what> with kind one of builtin, shared"):
        load_dataset("ftp://example.org/data")
    with pytest.raises(FaceZooError, match="unknown built-in dataset 'builtin:nope'; the built-ins are"):
        load_dataset("builtin:nope")
    with pytest.raises(FaceZooError, match="has no option 'colour'; its options are digit_source, digits_per_image"):
        load_dataset("builtin:mnist-canvas", colour="red")


def test_bad_split_name_in_a_table(tmp_path):
    (tmp_path / "t.csv").write_text("text,label,split\na,0,train\nb,1,../test\n")
    with pytest.raises(FaceZooError, match="split name '../test' is not allowed"):
        load_dataset(f"table:{tmp_path / 't.csv'}", split_column="split")


def test_decoding_a_truncated_image_at_load_time_names_the_file(image_folder):
    ds = load_dataset(f"folder:{image_folder}")
    data = io.BytesIO()
    Image.new("L", (64, 64), 3).save(data, format="JPEG")
    (image_folder / "dog" / "c.png").write_bytes(data.getvalue()[:200])
    with pytest.raises(FaceZooError, match=r"dog/c\.png: not a readable image"):
        ds.load(2)


def test_take_keeps_the_class_list_and_fingerprints_the_chosen_samples():
    from facezoo.data import load_dataset

    digits = load_dataset("builtin:digits")
    first = digits.take([0, 5, 9])
    assert len(first) == 3 and first.class_names == digits.class_names
    np.testing.assert_array_equal(first.sample_ids, digits.sample_ids[[0, 5, 9]])
    assert first.fingerprint == digits.take([0, 5, 9]).fingerprint != digits.take([0, 5, 8]).fingerprint
    assert digits.subset("test").fingerprint != digits.take(np.flatnonzero(digits.splits == "test")).fingerprint
