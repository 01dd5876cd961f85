"""vaecpp.widgets.latent_sliders without a browser."""

import io

import numpy as np
import pytest

ipywidgets = pytest.importorskip("ipywidgets")
Image = pytest.importorskip("PIL.Image")

from stub_vae import StubVAE  # noqa: E402
from vaecpp import widgets  # noqa: E402


def png_pixels(data):
    return np.asarray(Image.open(io.BytesIO(data)))


def test_one_slider_per_dimension_with_names_and_ranges():
    vae = StubVAE(latent_dim=2)
    ui = widgets.latent_sliders(vae, ranges=[(-1, 1), (0.5, 4)], step=0.1, names=["humour", "pose"])
    assert [s.description for s in ui.sliders] == ["humour", "pose"]
    assert [(s.min, s.max, s.step) for s in ui.sliders] == [(-1, 1, 0.1), (0.5, 4, 0.1)]
    assert ui.values == [0.0, 0.5]  # zero, moved into the range where needed
    assert isinstance(ui.widget, ipywidgets.HBox)  # the image beside the sliders
    sliders, image = ui.widget.children
    assert list(sliders.children) == ui.sliders and image is ui.image


@pytest.mark.parametrize("layout, box", [("beside", "HBox"), ("below", "VBox")])
def test_the_image_is_shown_at_its_own_size_not_stretched(layout, box):
    vae = StubVAE()  # decodes 6 x 5 images
    ui = widgets.latent_sliders(vae, zoom=4, layout=layout)
    assert isinstance(ui.widget, getattr(ipywidgets, box))
    assert ui.widget.layout.align_items == "flex-start"  # the box does not stretch its children
    assert ui.display_size == (20, 24) == png_pixels(ui.image.value).shape[::-1]
    assert (ui.image.layout.width, ui.image.layout.height) == ("20px", "24px")
    assert ui.image.layout.flex == "none"
    ui = widgets.latent_sliders(vae, zoom=4, size=(100, 120))  # a size the caller chooses
    assert ui.display_size == (100, 120)
    assert (ui.image.layout.width, ui.image.layout.height) == ("100px", "120px")
    assert png_pixels(ui.image.value).shape == (24, 20)  # the PNG itself stays sharp and small


def test_update_draws_the_decoded_point():
    stub_vae = StubVAE()
    ui = widgets.latent_sliders(stub_vae, scale=0.5, zoom=3)
    image = ui.update(1.0, -2.0)
    expected = stub_vae.decode([[0.5, -1.0]])[0]
    np.testing.assert_allclose(ui.current_image, expected)
    assert image is ui.current_image
    np.testing.assert_allclose(ui.current_z, [0.5, -1.0])
    assert ui.values == [1.0, -2.0]
    pixels = png_pixels(ui.image.value)
    assert pixels.shape == (18, 15)
    np.testing.assert_array_equal(pixels[::3, ::3], np.round(expected * 255).astype(np.uint8))
    ui.update([0.0, 0.0])  # one sequence works too
    np.testing.assert_allclose(ui.current_image, stub_vae.decode([[0.0, 0.0]])[0])


def test_moving_a_slider_redraws_once():
    stub_vae = StubVAE()
    ui = widgets.latent_sliders(stub_vae)
    calls = len(stub_vae.decoded)
    ui.sliders[1].value = 1.5
    assert len(stub_vae.decoded) == calls + 1
    np.testing.assert_allclose(ui.current_z, [0.0, 1.5])
    ui.update(0.25, 0.75)  # setting both sliders decodes once, not three times
    assert len(stub_vae.decoded) == calls + 2


def test_rgb_flat_and_tanh_outputs():
    vae = StubVAE(input_shape=(4 * 4 * 3,), latent_dim=3, tanh=True)
    ui = widgets.latent_sliders(vae, image_shape=(4, 4, 3), value_range=(-1, 1), zoom=1)
    ui.update(0.3, -0.2, 0.1)
    expected = (vae.decode([[0.3, -0.2, 0.1]])[0].reshape(4, 4, 3) + 1) / 2
    np.testing.assert_allclose(ui.current_image, expected)
    assert png_pixels(ui.image.value).shape == (4, 4, 3)


def test_bad_arguments():
    stub_vae = StubVAE()
    with pytest.raises(ValueError, match="names"):
        widgets.latent_sliders(stub_vae, names=["only one"])
    with pytest.raises(ValueError, match="ranges"):
        widgets.latent_sliders(stub_vae, ranges=[(-1, 1)] * 3)
    with pytest.raises(ValueError, match="high > low"):
        widgets.latent_sliders(stub_vae, ranges=(1, -1))
    for size in [(0, 10), (10,), (10.5, 3), (-1, 4)]:
        with pytest.raises(ValueError, match="size"):
            widgets.latent_sliders(stub_vae, size=size)
    with pytest.raises(ValueError, match="layout"):
        widgets.latent_sliders(stub_vae, layout="above")
    ui = widgets.latent_sliders(stub_vae)
    with pytest.raises(ValueError, match="expected 2 values"):
        ui.update(1.0)


def test_bad_numbers_names_and_zoom_are_refused():
    """NaN or inf ranges, a step that is NaN or not a number, labels that are not strings and a
    zoom that is not a whole number are TypeError/ValueError naming the argument (before:
    accepted, a traitlets TraitError, a bare TypeError, or 2.5 silently truncated to 2)."""
    stub_vae = StubVAE()
    for ranges in [(np.nan, 1.0), (-np.inf, 1.0), [(-1, 1), (0, np.inf)]]:
        with pytest.raises(ValueError, match="ranges must be finite"):
            widgets.latent_sliders(stub_vae, ranges=ranges)
    with pytest.raises(TypeError, match="ranges"):
        widgets.latent_sliders(stub_vae, ranges=("a", "b"))
    for step, error in [(np.nan, ValueError), (np.inf, ValueError), (0.0, ValueError),
                        ("0.1", TypeError)]:
        with pytest.raises(error, match="step"):
            widgets.latent_sliders(stub_vae, step=step)
    with pytest.raises(ValueError, match="scale"):
        widgets.latent_sliders(stub_vae, scale=np.nan)
    with pytest.raises(TypeError, match="names must be strings, got int"):
        widgets.latent_sliders(stub_vae, names=[1, 2])
    with pytest.raises(TypeError, match="names"):
        widgets.latent_sliders(stub_vae, names="ab")
    for zoom, error in [(2.5, TypeError), (2.0, TypeError), (0, ValueError), (True, TypeError)]:
        with pytest.raises(error, match="zoom"):
            widgets.latent_sliders(stub_vae, zoom=zoom)
    assert len(stub_vae.decoded) == 0  # refused before anything was decoded
    assert widgets.latent_sliders(stub_vae, zoom=np.int64(2)).display_size == (10, 12)


def test_a_huge_zoom_is_checked_against_the_memory_limit(monkeypatch):
    """Under a 100 MiB limit, zoom=2000 of a 6 x 5 image (a 10,000 x 12,000 picture and its
    PNG, 240 MB; zoom=10**5 would be 600 GB) is a ValueError naming its size before anything
    is decoded, not an allocation of that size."""
    from vaecpp import _limits
    monkeypatch.setattr(_limits, "memory_limit", lambda: 100 << 20)  # 100 MiB
    stub_vae = StubVAE()
    with pytest.raises(ValueError, match=r"a 10000 x 12000 picture \(zoom=2000\) would need"):
        widgets.latent_sliders(stub_vae, zoom=2000)
    assert len(stub_vae.decoded) == 0
    assert widgets.latent_sliders(stub_vae, zoom=100).display_size == (500, 600)  # what fits


def test_update_with_a_bad_value_leaves_the_sliders_and_the_image():
    """update(nan, 0) is a ValueError naming the value, and the sliders, the image and
    current_z stay as they were (before: the slider showed NaN after the error)."""
    stub_vae = StubVAE()
    ui = widgets.latent_sliders(stub_vae)
    ui.update(0.5, -0.5)
    before = (ui.values, ui.image.value, ui.current_z.copy(), len(stub_vae.decoded))
    with pytest.raises(ValueError, match=r"values\[0\] must be finite"):
        ui.update(np.nan, 0.0)
    with pytest.raises(ValueError, match=r"values\[1\] must be finite"):
        ui.update([0.0, np.inf])
    with pytest.raises(TypeError, match=r"values\[1\]"):
        ui.update(0.0, "1")
    assert ui.values == before[0] == [0.5, -0.5] and ui.image.value == before[1]
    np.testing.assert_array_equal(ui.current_z, before[2])
    assert len(stub_vae.decoded) == before[3]

