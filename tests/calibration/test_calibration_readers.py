"""Readers and `open_samples`: each source kind round-trips its data; each bad source gets its message."""

from __future__ import annotations

import re

import numpy as np
import pytest

from calibration import DataOptions, ImagePreprocess, READERS, open_samples
from calibration.readers.base import SampleReader
from exporter.errors import CalibrationError


def test_all_readers_are_registered():
    assert READERS.names() == ["factory", "image_folder", "npy", "npy_folder", "npz"]
    for name, reader in READERS.items():
        assert issubclass(reader, SampleReader) and reader.name == name and reader.description


# --- npy -------------------------------------------------------------------------------------


def test_npy_rows_round_trip_exactly_under_the_file_stem(tmp_path, rng):
    data = rng.standard_normal((5, 3, 4)).astype(np.float32)
    np.save(tmp_path / "calib.npy", data)
    samples = open_samples(str(tmp_path / "calib.npy"))
    assert len(samples) == 5
    assert samples.keys == ("calib",)
    assert not samples.has_labels
    assert samples.description == f"npy file {tmp_path / 'calib.npy'} (5 samples, key 'calib')"
    for i, sample in enumerate(samples):
        np.testing.assert_array_equal(sample.inputs["calib"], data[i])
        assert sample.origin == f"calib.npy[{i}]"
        assert sample.label is None
        assert not isinstance(sample.inputs["calib"], np.memmap)
    np.testing.assert_array_equal(samples[-1].inputs["calib"], data[4])


def test_npy_scalar_is_rejected(tmp_path):
    np.save(tmp_path / "one.npy", np.float32(3.0))
    with pytest.raises(CalibrationError, match=re.escape(f"npy file {tmp_path / 'one.npy'} holds a single value")):
        open_samples(str(tmp_path / "one.npy"))


def test_npy_corrupt_file_names_it(tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(CalibrationError, match=re.escape(f"cannot read npy file {tmp_path / 'bad.npy'}: ")):
        open_samples(str(tmp_path / "bad.npy"))


# --- npz -------------------------------------------------------------------------------------


def test_npz_inputs_and_labels(tmp_path, rng):
    a = rng.standard_normal((6, 2)).astype(np.float32)
    b = rng.integers(0, 9, (6, 3)).astype(np.int64)
    y = np.array([3, 1, 4, 1, 5, 9])
    np.savez(tmp_path / "data.npz", a=a, b=b, labels=y)
    samples = open_samples(str(tmp_path / "data.npz"))
    assert len(samples) == 6
    assert set(samples.keys) == {"a", "b"}
    assert samples.has_labels
    assert samples.description == f"npz file {tmp_path / 'data.npz'} (6 samples, keys 'a', 'b', labels 'labels')"
    for i in range(6):
        sample = samples[i]
        np.testing.assert_array_equal(sample.inputs["a"], a[i])
        np.testing.assert_array_equal(sample.inputs["b"], b[i])
        assert sample.label == y[i]
        assert sample.origin == f"data.npz[{i}]"


@pytest.mark.parametrize("label_key", ["label", "y"])
def test_npz_alternative_label_keys(tmp_path, label_key):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 2), np.float32), **{label_key: np.array([[0], [2], [1]])})
    samples = open_samples(str(tmp_path / "d.npz"))
    assert samples.keys == ("x",)
    assert [s.label for s in samples] == [0, 2, 1]


def test_npz_length_mismatch_names_keys_and_lengths(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2)), labels=np.zeros(3, np.int64))
    with pytest.raises(
        CalibrationError,
        match=re.escape(
            f"npz file {tmp_path / 'd.npz'} has arrays of different lengths ('x': 4, 'labels': 3): "
            "every array needs one row per sample"
        ),
    ):
        open_samples(str(tmp_path / "d.npz"))


def test_npz_with_only_labels_is_rejected(tmp_path):
    np.savez(tmp_path / "d.npz", labels=np.zeros(3, np.int64))
    with pytest.raises(CalibrationError, match=re.escape("has only 'labels': expected one array per model input")):
        open_samples(str(tmp_path / "d.npz"))


def test_npz_fractional_labels_are_rejected(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 2)), labels=np.array([0.5, 1.0]))
    with pytest.raises(CalibrationError, match=re.escape("are not whole numbers (dtype float64); store integer")):
        open_samples(str(tmp_path / "d.npz"))


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_reads_rows_and_inflates_once_per_forward_pass(tmp_path, monkeypatch, save):
    from calibration.readers import zip_members

    save(tmp_path / "d.npz", x=np.arange(8.0).reshape(4, 2))
    opened = []
    original = zip_members.MemberRows._open
    monkeypatch.setattr(zip_members.MemberRows, "_open", lambda self: opened.append(1) or original(self))
    fresh = open_samples(str(tmp_path / "d.npz"))
    assert [float(s.inputs["x"][1]) for s in fresh] == [1.0, 3.0, 5.0, 7.0]
    assert float(fresh[2].inputs["x"][0]) == 4.0  # going back reopens a compressed member
    compressed = save is np.savez_compressed
    assert len(opened) == (2 if compressed else 0)  # a stored member is memory-mapped, never streamed


# --- npy folder ------------------------------------------------------------------------------


def test_npy_folder_sorted_files_and_leading_axis_squeezed(tmp_path, rng):
    folder = tmp_path / "digits"
    folder.mkdir()
    arrays = [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(3)]
    np.save(folder / "b.npy", arrays[1][None])  # saved as a batch of one
    np.save(folder / "a.npy", arrays[0])
    np.save(folder / "c.NPY", arrays[2])
    samples = open_samples(str(folder))
    assert len(samples) == 3
    assert samples.keys == ("digits",)
    assert samples.description == f"npy folder {folder} (3 files)"
    for i, sample in enumerate(samples):
        np.testing.assert_array_equal(sample.inputs["digits"], arrays[i])
    assert samples[1].origin == str(folder / "b.npy")


def test_npy_folder_bad_file_names_it(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    (tmp_path / "b.npy").write_bytes(b"garbage")
    samples = open_samples(str(tmp_path))
    with pytest.raises(CalibrationError, match=re.escape(f"cannot read npy file {tmp_path / 'b.npy'}: ")):
        samples[1]


# --- image folder ----------------------------------------------------------------------------


def test_image_folder_class_subfolders_give_sorted_labels(tmp_path, image_writer):
    image_writer(tmp_path / "dog" / "1.png", (0, 0, 255))
    image_writer(tmp_path / "cat" / "b.JPG", (255, 0, 0))
    image_writer(tmp_path / "cat" / "a.png", (255, 0, 0))
    image_writer(tmp_path / "cat" / "nested" / "c.bmp", (255, 0, 0))
    (tmp_path / "empty_class").mkdir()
    image_writer(tmp_path / "zebra" / "z.webp", (0, 255, 0))
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    samples = open_samples(str(tmp_path))
    assert samples.keys == ("image",)
    assert samples.has_labels
    assert samples.classes == ["cat", "dog", "empty_class", "zebra"]
    assert [(p.relative_to(tmp_path).as_posix(), s.label) for p, s in zip(samples.files, samples)] == [
        ("cat/a.png", 0),
        ("cat/b.JPG", 0),
        ("cat/nested/c.bmp", 0),
        ("dog/1.png", 1),
        ("zebra/z.webp", 3),
    ]
    assert samples.description == f"image folder {tmp_path} (5 images, 4 class folders)"
    np.testing.assert_allclose(samples[3].inputs["image"][:, 0, 0], [0.0, 0.0, 1.0])
    assert samples[3].inputs["image"].shape == (3, 8, 8)
    assert samples[3].origin == str(tmp_path / "dog" / "1.png")


def test_flat_image_folder_has_no_labels_and_uses_the_preset(tmp_path, image_writer):
    image_writer(tmp_path / "b.png", (255, 255, 255), size=(12, 10))
    image_writer(tmp_path / "a.jpeg", (0, 0, 0), size=(12, 10))
    options = DataOptions(image=ImagePreprocess.preset("symmetric"))
    samples = open_samples(str(tmp_path), options)
    assert not samples.has_labels
    assert [s.label for s in samples] == [None, None]
    first, second = samples[0].inputs["image"], samples[1].inputs["image"]
    assert first.shape == (3, 10, 12) and first.dtype == np.float32
    np.testing.assert_allclose(first, -1.0)
    np.testing.assert_allclose(second, 1.0)


def test_unreadable_image_names_the_file(tmp_path, image_writer):
    image_writer(tmp_path / "x" / "good.png", (1, 2, 3))
    (tmp_path / "x" / "bad.png").write_bytes(b"\x89PNG not really")
    samples = open_samples(str(tmp_path))
    bad = tmp_path / "x" / "bad.png"
    assert samples.files[0] == bad
    with pytest.raises(CalibrationError, match=re.escape(f"cannot read image {bad}: ") + r".*" + re.escape(
        "; remove or replace the file"
    )):
        samples[0]


def test_images_both_flat_and_in_class_folders_is_ambiguous(tmp_path, image_writer):
    image_writer(tmp_path / "top.png", 0)
    image_writer(tmp_path / "cls" / "a.png", 0)
    with pytest.raises(CalibrationError, match=re.escape("has both images at its top level (e.g. top.png)")):
        open_samples(str(tmp_path))


def test_image_smaller_than_crop_names_the_file(tmp_path, image_writer):
    path = image_writer(tmp_path / "tiny.png", 0, size=(10, 12))
    samples = open_samples(str(tmp_path), DataOptions(image=ImagePreprocess(crop=11)))
    with pytest.raises(CalibrationError, match=re.escape(f"image {path} is 10x12, smaller than the 11x11 crop")):
        samples[0]


# --- factory ---------------------------------------------------------------------------------


def test_factory_torch_tensor_dataset_is_lazy_with_labels(factory_module):
    factory_module(
        "tds_factory",
        "import torch\n"
        "CALLS = []\n"
        "class Logged(torch.utils.data.TensorDataset):\n"
        "    def __getitem__(self, i):\n"
        "        CALLS.append(i)\n"
        "        return super().__getitem__(i)\n"
        "def make():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    return Logged(torch.randn(7, 2, 3, generator=g), torch.arange(7) % 3)\n",
    )
    samples = open_samples("tds_factory:make")
    import tds_factory
    import torch

    expected = torch.randn(7, 2, 3, generator=torch.Generator().manual_seed(0)).numpy()
    assert len(samples) == 7
    assert samples.keys == ("input",)
    assert samples.has_labels
    assert tds_factory.CALLS == [6, 0]  # the last claimed item (is len() true?) and the first (keys)
    sample = samples[5]
    np.testing.assert_array_equal(sample.inputs["input"], expected[5])
    assert sample.label == 2
    assert sample.origin == "tds_factory:make[5]"
    assert samples.description == "calibration factory tds_factory:make (7 samples)"


def test_factory_generator_is_capped_by_max_samples(factory_module):
    factory_module(
        "gen_factory",
        "import itertools\n"
        "import numpy as np\n"
        "def make():\n"
        "    for i in itertools.count():\n"
        "        yield {'a': np.full((2,), i, np.float32), 'b': np.array([i, -i]), 'label': i % 2}\n",
    )
    samples = open_samples("gen_factory:make", DataOptions(max_samples=4))
    assert len(samples) == 4
    assert samples.keys == ("a", "b")
    assert [s.label for s in samples] == [0, 1, 0, 1]
    np.testing.assert_array_equal(samples[3].inputs["a"], [3.0, 3.0])
    np.testing.assert_array_equal(samples[3].inputs["b"], [3, -3])
    assert samples.description == "calibration factory gen_factory:make (4 samples)"


def test_factory_item_shapes(factory_module):
    factory_module(
        "items_factory",
        "import numpy as np\n"
        "def make():\n"
        "    return iter([(np.ones(2),), (np.zeros(2), np.int64(4))])\n",
    )
    samples = open_samples("items_factory:make")
    assert [s.label for s in samples] == [None, 4]
    assert not samples.has_labels
    np.testing.assert_array_equal(samples[0].inputs["input"], [1.0, 1.0])


def test_factory_iterable_dataset_and_dataloader(factory_module):
    factory_module(
        "torch_iter_factory",
        "import torch\n"
        "class Stream(torch.utils.data.IterableDataset):\n"
        "    def __iter__(self):\n"
        "        return iter([(torch.full((2,), float(i)), i) for i in range(3)])\n"
        "def stream():\n"
        "    return Stream()\n"
        "def loader():\n"
        "    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(4, 2)), batch_size=2)\n",
    )
    samples = open_samples("torch_iter_factory:stream")
    assert [s.label for s in samples] == [0, 1, 2]
    np.testing.assert_array_equal(samples[2].inputs["input"], [2.0, 2.0])
    with pytest.raises(CalibrationError, match=re.escape("returned a DataLoader, which yields batches: return its")):
        open_samples("torch_iter_factory:loader")


def test_factory_bad_import_is_one_line(factory_module):
    with pytest.raises(
        CalibrationError, match=re.escape("cannot import calibration factory 'nopkg.mod:fn': No module named 'nopkg'")
    ):
        open_samples("nopkg.mod:fn")


def test_factory_missing_function(factory_module):
    factory_module("empty_factory", "X = 1\n")
    with pytest.raises(
        CalibrationError,
        match=re.escape("calibration factory 'empty_factory:make': module 'empty_factory' has no function 'make'"),
    ):
        open_samples("empty_factory:make")


def test_factory_item_of_wrong_kind(factory_module):
    factory_module("str_factory", "def make():\n    return ['abc']\n")
    with pytest.raises(
        CalibrationError, match=re.escape("calibration sample str_factory:make[0]: 'input' is a str of dtype <U3")
    ):
        open_samples("str_factory:make")


# --- open_samples errors ---------------------------------------------------------------------


def test_missing_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(
        CalibrationError,
        match=re.escape(
            f"calibration data not found: {missing} (expected a .npy/.npz file, a folder of .npy files or "
            "images, or package.module:function)"
        ),
    ):
        open_samples(str(missing))


@pytest.mark.parametrize("content", [None, "notes.txt"])
def test_empty_folder(tmp_path, content):
    if content:
        (tmp_path / content).write_text("x")
    with pytest.raises(CalibrationError, match=re.escape(f"calibration folder {tmp_path} is empty: ")):
        open_samples(str(tmp_path))


def test_unsupported_file_lists_supported_kinds(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("1,2\n")
    with pytest.raises(
        CalibrationError,
        match=re.escape(f"calibration data {path} is a .csv file, which no reader handles; supported: factory: "),
    ) as caught:
        open_samples(str(path))
    assert "npz: a .npz file" in str(caught.value) and "\n" not in str(caught.value)
