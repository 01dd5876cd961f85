"""image_folder: decoding, cropping, colour conversion, errors and streaming."""

import threading

import numpy as np
import pytest

from vaecpp import _image_folder, _limits, datasets

Image = pytest.importorskip("PIL.Image")

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def solid(size_wh, colour, mode="RGB"):
    return Image.new(mode, size_wh, colour)


def worker_threads():
    return [t for t in threading.enumerate() if t.name == "vaecpp-image-folder" and t.is_alive()]


@pytest.fixture
def folder(tmp_path):
    """Five images (PNG, JPEG, greyscale, RGBA, in a subfolder) and a text file."""
    solid((8, 8), RED).save(tmp_path / "a.png")
    solid((8, 8), BLUE).save(tmp_path / "b.jpg", quality=95)
    solid((8, 8), 128, "L").save(tmp_path / "c.png")
    rgba = solid((8, 8), (0, 0, 0, 0), "RGBA")  # fully transparent
    rgba.save(tmp_path / "d.png")
    (tmp_path / "sub").mkdir()
    solid((8, 8), GREEN).save(tmp_path / "sub" / "e.PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_loads_sorted_rgb_float32(folder):
    x = datasets.image_folder(folder, size=(4, 4))
    assert x.shape == (5, 4, 4, 3) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_allclose(x[0], np.broadcast_to([1, 0, 0], (4, 4, 3)))  # a.png
    np.testing.assert_allclose(x[1], np.broadcast_to([0, 0, 1], (4, 4, 3)), atol=0.02)  # JPEG
    np.testing.assert_allclose(x[2], 128 / 255)  # greyscale: three equal channels
    np.testing.assert_allclose(x[3], 1.0)  # transparent over the white background
    np.testing.assert_allclose(x[4], np.broadcast_to([0, 1, 0], (4, 4, 3)))  # sub/e.PNG


def test_non_recursive_and_background(folder):
    x = datasets.image_folder(folder, size=(2, 2), recursive=False, background=(0, 0, 0))
    assert len(x) == 4
    np.testing.assert_allclose(x[3], 0.0)


def test_centre_crop_keeps_aspect_and_none_squeezes(tmp_path):
    img = solid((30, 10), RED)  # 30 wide, 10 high: red sides, green centre square
    img.paste(solid((10, 10), GREEN), (10, 0))
    img.save(tmp_path / "wide.png")
    centre = datasets.image_folder(tmp_path, size=(5, 5))[0]
    np.testing.assert_allclose(centre, np.broadcast_to([0, 1, 0], (5, 5, 3)))
    squeezed = datasets.image_folder(tmp_path, size=(5, 15), crop=None)[0]
    np.testing.assert_allclose(squeezed[:, 0], np.broadcast_to([1, 0, 0], (5, 3)))
    np.testing.assert_allclose(squeezed[:, 7], np.broadcast_to([0, 1, 0], (5, 3)))
    boxed = datasets.image_folder(tmp_path, size=(2, 2), crop=(4, 6))[0]
    np.testing.assert_allclose(boxed, np.broadcast_to([0, 1, 0], (2, 2, 3)))


def test_sixteen_bit_greyscale(tmp_path):
    pixels = np.full((6, 6), 65535 // 4, dtype=np.uint16)
    Image.fromarray(pixels).save(tmp_path / "deep.png")
    x = datasets.image_folder(tmp_path, size=(3, 3))
    np.testing.assert_allclose(x, (65535 // 4) / 65535, rtol=1e-5)


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.info["transparency"] = 1
    img.save(tmp_path / "p.png", transparency=1)
    np.testing.assert_allclose(datasets.image_folder(tmp_path, size=(2, 2)), 1.0)


def test_exif_orientation_is_applied(tmp_path):
    img = solid((20, 10), (0, 0, 0))
    img.paste(solid((10, 10), (255, 255, 255)), (10, 0))  # right half white
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: shown turned 90 degrees clockwise
    img.save(tmp_path / "turned.png", exif=exif)
    x = datasets.image_folder(tmp_path, size=(20, 10), crop=None)[0]
    assert x.shape == (20, 10, 3)
    np.testing.assert_allclose(x[:8].mean(), 0.0, atol=0.05)  # top half black
    np.testing.assert_allclose(x[12:].mean(), 1.0, atol=0.05)  # bottom half white


def test_unreadable_file_raises_or_is_skipped(folder):
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match="broken.png"):
        datasets.image_folder(folder, size=(4, 4))
    with pytest.warns(UserWarning, match="broken.png"):
        x = datasets.image_folder(folder, size=(4, 4), on_error="skip")
    assert len(x) == 5


def test_truncated_jpeg_raises(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "full.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="full.jpg"):
        datasets.image_folder(tmp_path)


def test_argument_and_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        datasets.image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no image files"):
        datasets.image_folder(tmp_path)
    with pytest.raises(ValueError, match="on_error"):
        datasets.image_folder(tmp_path, on_error="ignore")
    with pytest.raises(ValueError, match="size"):
        datasets.image_folder(tmp_path, size=(0, 4))
    with pytest.raises(ValueError, match="crop must be"):
        datasets.image_folder(tmp_path, crop="middle")


def test_sizes_beyond_the_memory_limit_are_refused_before_decoding(folder, monkeypatch):
    """The output (n x h x w x 3 float32; streamed: a batch and those waiting) is checked against
    ``_limits.memory_limit`` before any image is decoded: a ValueError naming the size, not the
    out-of-memory killer."""
    monkeypatch.setattr(_limits, "memory_limit", lambda: 50 << 20)  # 50 MiB
    decoded = []
    monkeypatch.setattr(_image_folder, "load_image", lambda f, *a, **k: decoded.append(f))
    for stream in (False, True):
        with pytest.raises(ValueError, match=r"1 image of 100000 x 100000 pixels.* memory"):
            datasets.image_folder(folder, size=(100000, 100000), stream=stream)
    # one 1000 x 1000 image (12 MB) fits, the five of the folder (60 MB) do not
    with pytest.raises(ValueError, match=r"5 images of 1000 x 1000 pixels.* memory"):
        datasets.image_folder(folder, size=(1000, 1000))
    source = datasets.image_folder(folder, size=(1000, 1000), stream=True)
    with pytest.raises(ValueError, match=r"image_folder batches .* memory"):
        source.batches(2)  # at once, not from the generator
    assert decoded == []


def test_out_of_memory_while_decoding_is_named(folder, monkeypatch):
    """A MemoryError inside Pillow (its message empty) becomes a ValueError that says so."""
    def exhausted(*args):
        raise MemoryError()

    monkeypatch.setattr(_image_folder, "_crop_box", exhausted)
    with pytest.raises(ValueError, match=r"a\.png: cannot read image \(out of memory decoding it"):
        datasets.image_folder(folder, size=(4, 4))


# ---- streaming ---------------------------------------------------------------------------------

def test_stream_source_matches_eager_load(folder):
    source = datasets.image_folder(folder, size=(4, 4), stream=True)
    assert len(source) == 5 and source.input_shape == (4, 4, 3)
    batches = list(source.batches(2, shuffle=False))
    assert [len(b) for b in batches] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate(batches), source.load())
    assert [len(b) for b in source.batches(2, shuffle=False, drop_last=True)] == [2, 2]
    assert not worker_threads()


def test_stream_shuffle_depends_on_seed_and_epoch(tmp_path):
    for i in range(12):
        solid((2, 2), (i * 20, 0, 0)).save(tmp_path / f"{i:02d}.png")
    source = datasets.image_folder(tmp_path, size=(2, 2), stream=True)

    def order(**kw):
        return [round(float(v) * 255 / 20) for b in source.batches(5, **kw) for v in b[:, 0, 0, 0]]

    assert sorted(order(seed=0, epoch=0)) == list(range(12))
    assert order(seed=0, epoch=0) == order(seed=0, epoch=0)
    assert order(seed=0, epoch=0) != order(seed=0, epoch=1)
    assert order(seed=0, epoch=0) != order(seed=1, epoch=0)
    assert order(shuffle=False) == list(range(12))


def test_stream_thread_stops_when_generator_is_closed(tmp_path):
    for i in range(40):
        solid((16, 16), (i, i, i)).save(tmp_path / f"{i:02d}.png")
    source = datasets.image_folder(tmp_path, size=(8, 8), stream=True)
    batches = source.batches(1, prefetch=2)
    next(batches)
    assert len(worker_threads()) == 1
    batches.close()
    assert not worker_threads()


def test_stream_errors_reach_the_consumer(folder):
    (folder / "zz_broken.png").write_bytes(b"nope")
    source = datasets.image_folder(folder, size=(4, 4), stream=True)
    with pytest.raises(ValueError, match="zz_broken.png"):
        list(source.batches(2, shuffle=False))
    assert not worker_threads()
    skipping = datasets.image_folder(folder, size=(4, 4), stream=True, on_error="skip")
    with pytest.warns(UserWarning, match="zz_broken.png"):
        sizes = [len(b) for b in skipping.batches(3, shuffle=False)]
    assert sizes == [3, 2]
    assert not worker_threads()


def test_stream_shares_decode_only_their_files(tmp_path):
    """rank/size (distributed training): each rank gets its contiguous share of every batch of
    the common order, an empty one included, and decodes only those files."""
    for i in range(11):
        solid((2, 2), (i * 20, 0, 0)).save(tmp_path / f"{i:02d}.png")
    source = datasets.image_folder(tmp_path, size=(2, 2), stream=True)
    whole = list(source.batches(4, seed=3, epoch=1))  # batches of 4, 4, 3
    for size in (1, 2, 3, 5):
        shares = [list(source.batches(4, seed=3, epoch=1, rank=r, size=size))
                  for r in range(size)]
        for k, batch in enumerate(whole):  # the shares, in rank order, make up the batch
            assert [len(s[k]) for s in shares] == [len(batch) * (r + 1) // size
                                                   - len(batch) * r // size for r in range(size)]
            np.testing.assert_array_equal(np.concatenate([s[k] for s in shares]), batch)
            assert all(s[k].shape[1:] == (2, 2, 3) for s in shares)
    decoded = []
    load = _image_folder.load_image
    try:
        _image_folder.load_image = lambda f, *a, **k: decoded.append(f.name) or load(f, *a, **k)
        list(source.batches(4, shuffle=False, rank=1, size=3))
    finally:
        _image_folder.load_image = load
    assert decoded == ["01.png", "05.png", "09.png"]  # rows [1, 2) of 4, 4 and [1, 2) of 3
    assert not worker_threads()


@pytest.mark.parametrize("rank,size", [(2, 2), (-1, 2), (0, 0), (0.5, 2), (True, 2)])
def test_stream_shares_refuse_a_bad_rank_or_size(folder, rank, size):
    source = datasets.image_folder(folder, size=(4, 4), stream=True)
    with pytest.raises(ValueError, match="rank and size"):
        source.batches(2, rank=rank, size=size)
