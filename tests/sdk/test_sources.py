"""Tests of sdk.sources: dataset readers, DICOM (real scanner files), video, dispatch, bad input."""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from sdk import synthetic
from sdk.errors import InputError, SDKError, SourceError
from sdk.sources import (
    ArraySource,
    BusiReader,
    CsvFolderReader,
    DicomSource,
    Frame,
    ImageSequenceSource,
    IteratorSource,
    VideoSource,
    open_source,
)

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402


def _testfile(name: str) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not in pydicom-data here")
    return Path(path)


def _decoder_available(uid: str) -> bool:
    from pydicom.pixels import get_decoder

    try:
        return bool(get_decoder(uid).is_available)
    except (NotImplementedError, ValueError):
        return False


def _write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


# --- BUSI -------------------------------------------------------------------------------------


def test_busi_round_trip_through_dataset(tmp_path: Path) -> None:
    written = synthetic.dataset(
        tmp_path, n=9, balance=(1, 1, 1), size=(96, 96), seed=5, lesion_labels=None
    )
    assert len(written) == 9 and all(p.is_file() for p in written)
    assert (tmp_path / "benign" / "benign (1).png").is_file()
    assert (tmp_path / "benign" / "benign (1)_mask.png").is_file()
    mask_file = cv2.imread(str(tmp_path / "malignant" / "malignant (1)_mask.png"), 0)
    assert set(np.unique(mask_file)) == {0, 255}
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".*"))
    memory = list(synthetic.dataset(n=9, balance=(1, 1, 1), size=(96, 96), seed=5))
    reader = BusiReader(tmp_path)
    samples = list(reader)
    assert reader.skipped == [] and len(samples) == len(reader) == 9
    by_path = {s.path: s for s in samples}
    for path, (image, mask, info) in zip(written, memory, strict=True):
        s = by_path[path]
        assert s.label == info["label"] == path.parent.name
        assert np.array_equal(s.image, image)  # PNG is lossless
        assert np.array_equal(s.mask, (mask > 0).astype(np.uint8))
        assert s.mask.dtype == np.uint8 and s.image.dtype == np.uint8
    lines = (tmp_path / "phantoms.jsonl").read_text().splitlines()
    assert len(lines) == 9


def test_busi_several_lesions_get_several_mask_files(tmp_path: Path) -> None:
    synthetic.dataset(
        tmp_path, n=1, balance=(1, 0, 0), size=(128, 128), seed=1, n_lesions=2, lesion_size_mm=6.0
    )
    files = sorted(p.name for p in (tmp_path / "benign").iterdir())
    assert files == ["benign (1).png", "benign (1)_mask.png", "benign (1)_mask_1.png"]
    m0 = cv2.imread(str(tmp_path / "benign" / "benign (1)_mask.png"), 0) > 0
    m1 = cv2.imread(str(tmp_path / "benign" / "benign (1)_mask_1.png"), 0) > 0
    assert m0.any() and m1.any() and not (m0 & m1).any()
    (sample,) = list(BusiReader(tmp_path))
    assert np.array_equal(sample.mask.astype(bool), m0 | m1)


def _busi_image(root: Path, label: str, n: int, masks: list[np.ndarray], size=(40, 50)) -> Path:
    img = np.full(size, 100, np.uint8)
    path = _write(root / label / f"{label} ({n}).png", cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    for k, m in enumerate(masks):
        suffix = "_mask" if k == 0 else f"_mask_{k}"
        _write(root / label / f"{label} ({n}){suffix}.png", m)
    return path


def test_busi_mask_merge_by_union_and_natural_order(tmp_path: Path) -> None:
    a = np.zeros((40, 50), np.uint8)
    a[5:10, 5:10] = 255
    b = np.zeros((40, 50), np.uint8)
    b[20:30, 30:45] = 255
    for n in (10, 2, 1):
        _busi_image(tmp_path, "malignant", n, [a, b])
    samples = list(BusiReader(tmp_path))
    assert [s.path.name for s in samples] == [
        "malignant (1).png",
        "malignant (2).png",
        "malignant (10).png",
    ]
    expected = ((a > 0) | (b > 0)).astype(np.uint8)
    assert all(np.array_equal(s.mask, expected) for s in samples)
    assert samples[0].image.shape == (40, 50)  # colour PNG read as grey


def test_busi_bad_files_are_skipped_and_reported(tmp_path: Path, caplog) -> None:
    ok = np.zeros((40, 50), np.uint8)
    _busi_image(tmp_path, "benign", 1, [ok])
    _busi_image(tmp_path, "benign", 2, [np.zeros((20, 20), np.uint8)])  # wrong-size mask
    _busi_image(tmp_path, "benign", 3, [])  # lesion image without mask
    _busi_image(tmp_path, "normal", 1, [])  # normal without mask: empty mask
    (tmp_path / "benign" / "notes.txt").write_text("stray")
    (tmp_path / "benign" / "benign (4).png").write_bytes(b"not a png")
    (tmp_path / "benign" / "benign (4)_mask.png").write_bytes(b"x")
    (tmp_path / "phantoms.jsonl").write_text("{}\n")  # root-level files are not read
    with caplog.at_level(logging.WARNING, logger="sdk.sources"):
        reader = BusiReader(tmp_path)
        samples = list(reader)
    assert sorted(s.path.name for s in samples) == ["benign (1).png", "normal (1).png"]
    normal = next(s for s in samples if s.label == "normal")
    assert not normal.mask.any()
    reasons = {p.name: r for p, r in reader.skipped}
    assert "not an image" in reasons["notes.txt"]
    assert "20x20" in reasons["benign (2).png"] and "50x40" in reasons["benign (2).png"]
    assert "without a mask" in reasons["benign (3).png"]
    assert "not a readable image" in reasons["benign (4).png"]
    assert len(reader.skipped) == 4
    for path, _ in reader.skipped:  # each skip was logged, naming the file
        assert str(path) in caplog.text


def test_busi_strict_raises_naming_the_file(tmp_path: Path) -> None:
    _busi_image(tmp_path, "benign", 1, [np.zeros((20, 20), np.uint8)])
    with pytest.raises(InputError, match=r"benign \(1\)\.png.*mask"):
        list(BusiReader(tmp_path, strict=True))


def test_busi_folder_level_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        BusiReader(tmp_path / "missing")
    with pytest.raises(SourceError, match="no class folder"):
        BusiReader(tmp_path)
    (tmp_path / "benign").mkdir()
    with pytest.raises(SourceError, match="no image found"):
        BusiReader(tmp_path)
    _busi_image(tmp_path, "benign", 1, [np.zeros((40, 50), np.uint8)])
    (tmp_path / "other").mkdir()
    with pytest.raises(InputError, match=r"unknown class folder.*other"):
        BusiReader(tmp_path)
    assert len(list(BusiReader(tmp_path, classes=("benign", "other")))) == 1


# --- CSV folder -------------------------------------------------------------------------------


def test_csv_folder_reader(tmp_path: Path, caplog) -> None:
    img = np.arange(30 * 40, dtype=np.uint8).reshape(30, 40)
    m1 = np.zeros((30, 40), np.uint8)
    m1[2:5, 2:5] = 255
    m2 = np.zeros((30, 40), np.uint8)
    m2[10:20, 10:20] = 255
    _write(tmp_path / "img" / "a.png", img)
    _write(tmp_path / "img" / "b.png", img)
    _write(tmp_path / "img" / "c.png", img)
    _write(tmp_path / "masks" / "a1.png", m1)
    _write(tmp_path / "masks" / "a2.png", m2)
    _write(tmp_path / "masks" / "small.png", np.zeros((5, 5), np.uint8))
    (tmp_path / "labels.csv").write_text(
        "image,mask,label,site\n"
        "img/a.png,masks/a1.png;masks/a2.png,malignant,x\n"
        "img/b.png,,normal,y\n"
        "img/missing.png,,benign,z\n"
        "img/c.png,masks/small.png,benign,z\n"
    )
    with caplog.at_level(logging.WARNING, logger="sdk.sources"):
        reader = CsvFolderReader(tmp_path)
        samples = list(reader)
    assert [(s.path.name, s.label) for s in samples] == [
        ("a.png", "malignant"),
        ("b.png", "normal"),
    ]
    assert np.array_equal(samples[0].image, img)
    assert np.array_equal(samples[0].mask, ((m1 > 0) | (m2 > 0)).astype(np.uint8))
    assert not samples[1].mask.any()
    names = [p.name for p, _ in reader.skipped]
    assert names == ["missing.png", "c.png"]
    assert "line 4" in reader.skipped[0][1] and "5x5" in reader.skipped[1][1]
    with pytest.raises(SourceError, match=r"missing\.png"):
        list(CsvFolderReader(tmp_path / "labels.csv", strict=True))


def test_csv_reader_bad_csv(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("file,class\na.png,benign\n")
    with pytest.raises(InputError, match=r"labels.csv.*missing column.*image"):
        CsvFolderReader(tmp_path)
    (tmp_path / "empty.csv").write_text("image,label\n")
    with pytest.raises(SourceError, match="no data row"):
        CsvFolderReader(tmp_path / "empty.csv")
    with pytest.raises(SourceError, match="does not exist"):
        CsvFolderReader(tmp_path / "nope.csv")


# --- DICOM (real scanner files from pydicom-data) ----------------------------------------------


def test_dicom_rgb_single_frame() -> None:
    path = _testfile("US1_UNCR.dcm")
    src = open_source(path)
    assert isinstance(src, DicomSource) and len(src) == 1
    (frame,) = list(src)
    ref = pydicom.dcmread(path).pixel_array  # RGB
    assert frame.image.shape == (480, 640) and frame.image.dtype == np.uint8
    assert np.array_equal(frame.image, cv2.cvtColor(ref, cv2.COLOR_RGB2GRAY))
    (rgb,) = list(DicomSource(path, color="rgb"))
    assert np.array_equal(rgb.image, ref)
    assert src.metadata["photometric"] == "RGB" and src.metadata["modality"] == "US"


def test_dicom_jpeg2000_lossless_equals_uncompressed() -> None:
    j2k = _testfile("US1_J2KR.dcm")
    uid = pydicom.dcmread(j2k, stop_before_pixels=True).file_meta.TransferSyntaxUID
    if not _decoder_available(uid):
        pytest.skip("no JPEG 2000 decoder (pip install pylibjpeg pylibjpeg-openjpeg)")
    (a,) = list(DicomSource(j2k, color="rgb"))
    (b,) = list(DicomSource(_testfile("US1_UNCR.dcm"), color="rgb"))
    assert np.array_equal(a.image, b.image)  # YBR_RCT decoded back to the same RGB


def test_dicom_multiframe_ybr_cine_with_spacing_and_frame_time() -> None:
    path = _testfile("examples_ybr_color.dcm")
    uid = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    if not _decoder_available(uid):
        pytest.skip("no JPEG baseline decoder (pip install pylibjpeg pylibjpeg-libjpeg)")
    src = DicomSource(path, color="keep")
    assert src.n_frames == 30 and src.metadata["photometric"] == "YBR_FULL_422"
    frames = list(src)
    assert len(frames) == 30 and frames[0].image.shape == (240, 320, 3)
    assert [f.index for f in frames] == list(range(30))
    assert frames[1].timestamp == pytest.approx(0.033333, rel=1e-4)
    assert frames[29].timestamp == pytest.approx(29 * 0.033333, rel=1e-4)
    assert src.metadata["fps"] == pytest.approx(30.0, rel=1e-3)
    dy, dx = frames[0].pixel_spacing_mm
    assert dy == pytest.approx(0.5105, rel=1e-3) and dx == pytest.approx(0.5105, rel=1e-3)
    assert src.metadata["spacing_source"] == "SequenceOfUltrasoundRegions"
    # Frames differ (a real cine) and the colour conversion matches pydicom's RGB.
    assert not np.array_equal(frames[0].image, frames[15].image)
    from pydicom.pixels import pixel_array

    ref = pixel_array(pydicom.dcmread(path), index=15)
    assert np.abs(frames[15].image.astype(int) - ref).max() == 0


def test_dicom_palette_color_multiframe_and_rle() -> None:
    plain = DicomSource(_testfile("OBXXXX1A_2frame.dcm"), color="rgb")
    rle = DicomSource(_testfile("OBXXXX1A_rle_2frame.dcm"), color="rgb")
    a, b = list(plain), list(rle)
    assert len(a) == len(b) == 2
    assert a[0].image.shape == (600, 800, 3)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    assert a[0].image.std() > 10  # a real image, not a constant
    assert plain.metadata["pixel_spacing_mm"] == pytest.approx((0.26229, 0.26229), rel=1e-4)
    assert len(plain.metadata["ultrasound_regions"]) == 2


def test_dicom_16bit_palette_to_uint8_and_big_endian() -> None:
    little = DicomSource(_testfile("gdcm-US-ALOKA-16.dcm"), color="rgb")
    big = DicomSource(_testfile("gdcm-US-ALOKA-16_big.dcm"), color="rgb")
    (a,), (b,) = list(little), list(big)
    assert a.image.dtype == np.uint8 and a.image.max() > 200  # 16-bit LUT >> 8 keeps range
    assert np.array_equal(a.image, b.image)
    assert little.metadata["bits_stored"] == 16
    assert a.pixel_spacing_mm == pytest.approx((0.38265, 0.38265), rel=1e-4)


def test_dicom_monochrome_jpeg_lossless() -> None:
    path = _testfile("JPGLosslessP14SV1_1s_1f_8b.dcm")
    uid = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    if not _decoder_available(uid):
        pytest.skip("no JPEG lossless decoder (pip install pylibjpeg pylibjpeg-libjpeg)")
    src = DicomSource(path, color="keep")
    (frame,) = list(src)
    assert frame.image.shape == (768, 1024) and frame.image.ndim == 2
    assert frame.pixel_spacing_mm == pytest.approx((0.25477, 0.25477), rel=1e-4)
    assert frame.timestamp is None  # single frame, no clock in the file


def test_dicom_never_exposes_patient_identifiers(caplog) -> None:
    path = _testfile("gdcm-US-ALOKA-16.dcm")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    secrets = [str(ds.PatientName), str(ds.PatientID)]
    assert all(secrets)
    with caplog.at_level(logging.DEBUG):
        src = DicomSource(path)
        frames = list(src)
    text = repr(src) + str(src.metadata) + str(frames[0].metadata) + caplog.text
    for secret in secrets:
        assert secret not in text
    opted = DicomSource(path, include_phi=True)
    assert opted.metadata["phi"]["PatientID"] == str(ds.PatientID)


def test_dicom_truncated_file(tmp_path: Path) -> None:
    data = _testfile("US1_UNCR.dcm").read_bytes()
    bad = tmp_path / "cut.dcm"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=r"cut\.dcm"):
        list(open_source(bad))


def test_dicom_without_pixels_and_non_dicom(tmp_path: Path) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(tmp_path / "sr.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.Modality = "SR"
    ds.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    with pytest.raises(SourceError, match=r"sr\.dcm holds no pixel data"):
        DicomSource(tmp_path / "sr.dcm")
    (tmp_path / "fake.dcm").write_bytes(b"hello, not dicom" * 10)
    with pytest.raises(SourceError, match=r"fake\.dcm"):
        open_source(tmp_path / "fake.dcm")


# --- video and image sequences ---------------------------------------------------------------


def _cine_frames(n: int = 10, size=(96, 128)) -> list[np.ndarray]:
    return [f for f, _, _ in synthetic.cine(n, "benign", size, seed=1)]


def test_video_round_trip(tmp_path: Path) -> None:
    frames = _cine_frames()
    path = tmp_path / "loop.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (128, 96), True)
    if not writer.isOpened():
        pytest.skip("this OpenCV build has no mp4v writer")
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
    writer.release()
    src = open_source(path)
    assert isinstance(src, VideoSource) and len(src) == 10
    out = list(src)
    assert len(out) == 10 and out[0].image.shape == (96, 128) and out[0].image.dtype == np.uint8
    assert [f.timestamp for f in out[:3]] == pytest.approx([0.0, 0.1, 0.2])
    err = [
        np.abs(a.image.astype(int) - b.astype(int)).mean() for a, b in zip(out, frames, strict=True)
    ]
    assert max(err) < 12  # lossy codec, same content
    assert np.abs(out[0].image.astype(int) - frames[5].astype(int)).mean() > max(err)
    rgb = list(VideoSource(path, color="rgb", max_frames=3))
    assert len(rgb) == 3 and rgb[0].image.shape == (96, 128, 3)
    src.close()


def test_unreadable_and_missing_video(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(SourceError, match=r"broken\.mp4"):
        list(open_source(bad))
    with pytest.raises(SourceError, match="does not exist"):
        open_source(tmp_path / "nothing.avi")
    with pytest.raises(SourceError, match="GStreamer"):
        VideoSource("videotestsrc ! appsink")


def test_image_sequence_folder(tmp_path: Path) -> None:
    frames = _cine_frames(4, (64, 64))
    for i, f in enumerate(frames):
        _write(tmp_path / f"f{i * 5}.png", f)  # f0, f5, f10, f15: natural order matters
    (tmp_path / "readme.txt").write_text("x")
    src = open_source(tmp_path, fps=25.0)
    assert isinstance(src, ImageSequenceSource) and len(src) == 4
    out = list(src)
    assert all(np.array_equal(o.image, f) for o, f in zip(out, frames, strict=True))
    assert out[2].timestamp == pytest.approx(2 / 25)
    assert [p.name for p, _ in src.skipped] == ["readme.txt"]
    glob = list(open_source(str(tmp_path / "f1*.png")))
    assert len(glob) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no image file"):
        open_source(empty)


# --- arrays, iterators, dispatch ---------------------------------------------------------------


def test_array_and_iterator_sources() -> None:
    stack = np.stack(_cine_frames(3, (48, 64)))
    src = open_source(stack, fps=10.0)
    assert isinstance(src, ArraySource) and len(src) == 3
    out = list(src)
    assert np.array_equal(out[1].image, stack[1]) and out[1].timestamp == pytest.approx(0.1)
    colour = np.zeros((48, 64, 3), np.uint8)
    colour[..., 0] = 255  # pure red, RGB
    (one,) = list(open_source(colour, color="gray"))
    assert one.image.shape == (48, 64) and int(one.image[0, 0]) == 76  # BT.601: 0.299 * 255
    it = open_source(iter(stack), color="keep")
    assert isinstance(it, IteratorSource)
    assert [f.index for f in it] == [0, 1, 2]
    passthrough = Frame(stack[0], 7, 1.5, {"pixel_spacing_mm": (0.1, 0.1)})
    (f,) = list(open_source([passthrough]))
    assert f is passthrough and f.pixel_spacing_mm == (0.1, 0.1)


def test_dispatch_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="uint8"):
        open_source(np.zeros((10, 10), np.float32))
    with pytest.raises(InputError, match="uint8"):
        list(open_source(iter([np.zeros((10, 10), np.uint16)])))
    with pytest.raises(InputError, match="cannot read a float"):
        open_source(3.5)
    odd = tmp_path / "data.xyz"
    odd.write_text("?")
    with pytest.raises(SourceError, match=r"data\.xyz.*unknown file type"):
        open_source(odd)
    with pytest.raises(SourceError, match="does not exist"):
        open_source(tmp_path / "missing.png")
    with pytest.raises(SourceError, match="camera 97"):
        open_source(97)
    # Every error is an SDKError, catchable in one place.
    assert issubclass(SourceError, SDKError) and issubclass(InputError, SDKError)


def test_single_image_file(tmp_path: Path) -> None:
    img = _cine_frames(1, (40, 40))[0]
    path = _write(tmp_path / "one.png", img)
    (frame,) = list(open_source(path))
    assert np.array_equal(frame.image, img)
    copy = tmp_path / "copy.PNG"
    shutil.copy(path, copy)
    (frame2,) = list(open_source(copy))
    assert np.array_equal(frame2.image, img)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"Rows": 30000, "Columns": 30000}, r"30000x30000 pixel frames"),
        ({"Rows": 8000, "Columns": 9000}, r"more than an ultrasound frame"),
        ({"NumberOfFrames": -5}, r"NumberOfFrames is -5"),
        ({"NumberOfFrames": 10**7}, r"cannot fit in \d+ bytes"),
        ({"BitsAllocated": 12}, r"12 bits per pixel"),
    ],
)
def test_dicom_impossible_claims_refused_before_decoding(tmp_path: Path, changes, message) -> None:
    """A damaged header is a SourceError at open (before any decoder allocates the claimed
    frame: 30000x30000 RLE used to take 1 GB, then ask for pylibjpeg)."""
    ds = pydicom.dcmread(_testfile("OBXXXX1A_rle_2frame.dcm"))
    for k, v in changes.items():
        setattr(ds, k, v)
    ds.save_as(tmp_path / "claims.dcm")
    with pytest.raises(SourceError, match=message) as e:
        DicomSource(tmp_path / "claims.dcm")
    assert "claims.dcm" in str(e.value) and "damaged" in str(e.value)
    assert "pylibjpeg" not in str(e.value)


def test_dicom_corrupt_compressed_frame_is_damaged_data_not_a_missing_decoder(
    tmp_path: Path,
) -> None:
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(_testfile("OBXXXX1A_rle_2frame.dcm"))
    frames = list(generate_frames(ds.PixelData, number_of_frames=2))
    frames[1] = b"\x01\x00\x00\x00\x40" + b"\0" * 59 + b"garbage" * 10
    ds.PixelData = encapsulate(frames)
    ds.save_as(tmp_path / "bad1.dcm")
    src = DicomSource(tmp_path / "bad1.dcm")
    it = iter(src)
    assert next(it).index == 0
    with pytest.raises(SourceError, match=r"frame 1 cannot be decoded \(damaged") as e:
        next(it)
    assert "pip install" not in str(e.value) and "\n" not in str(e.value)


def test_dicom_unusable_pixel_spacing_is_dropped_not_fatal(tmp_path: Path, caplog) -> None:
    """A header spacing no frame can use (0, NaN) gives no mm² areas, one warning, and frames
    that still analyze -- not an error record per frame."""
    import sdk

    src = get_testdata_file("US1_UNCR.dcm") or get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(src)
    ds.PixelSpacing = [0, 0]
    if "SequenceOfUltrasoundRegions" in ds:
        del ds.SequenceOfUltrasoundRegions
    out = tmp_path / "zero_spacing.dcm"
    ds.save_as(out)
    with caplog.at_level(logging.WARNING):
        frames = list(open_source(out))
    assert frames and all(f.pixel_spacing_mm is None for f in frames)
    assert any("not usable" in r.getMessage() for r in caplog.records)
    r = sdk.Analyzer().run(frames[0].image)
    assert r.label
