import hashlib
import json

import cv2
import numpy as np
import pytest

from spinecascade.cli.main import main
from spinecascade.io.dataset import AasceDataset
from spinecascade.io.images import load_image
from spinecascade.io.labels import read_json_label
from spinecascade.landmarks import VERTEBRAE, centres, validate
from spinecascade.measurement.cobb import cobb_angles
from spinecascade.measurement.label_check import check_landmarks
from spinecascade.synthetic import FULL_LENGTH_VARIANTS, make_full_length, make_spine, write_aasce_layout


def test_same_seed_same_image_and_landmarks():
    a, b = make_spine(7), make_spine(7)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.landmarks, b.landmarks)
    assert not np.array_equal(make_spine(8).image, a.image)


@pytest.mark.parametrize(("curve", "cobb"), [("C", 20.0), ("C", 40.0), ("S", 30.0)])
def test_chosen_curve_gives_about_the_chosen_cobb_angle(curve, cobb):
    spine = make_spine(3, curve=curve, cobb_degrees=cobb)
    result = cobb_angles(spine.landmarks, spine.image.shape[0])
    assert result.pt.degrees == pytest.approx(cobb, abs=6)
    assert result.s_shaped == (curve == "S")


def test_landmarks_are_valid_and_pass_the_label_checker():
    for seed in range(20):
        spine = make_spine(seed)
        h, w = spine.image.shape
        validate(spine.landmarks, w, h)
        assert check_landmarks(spine.landmarks, w, h) == [], seed


def test_appearance_varies_with_the_parameters():
    plain = make_spine(1, contrast=0.3, noise=0.0, haze=0.0, ribs=False).image.astype(float)
    busy = make_spine(1, contrast=0.7, noise=0.05, haze=1.0, ribs=True).image.astype(float)
    assert busy.std() > plain.std()
    with pytest.raises(ValueError, match="curve"):
        make_spine(1, curve="Z")


def test_aasce_layout_reads_back_as_a_dataset(tmp_path):
    names = write_aasce_layout(tmp_path, 4, seed=10, width=96, height=240)
    data = AasceDataset(tmp_path)
    assert data.names == names
    np.testing.assert_allclose(data[0].landmarks, make_spine(10, 96, 240).landmarks)
    np.testing.assert_allclose(data[1].angles, cobb_angles(data[1].landmarks, 240).as_array(), atol=1e-9)


def test_make_spine_output_is_unchanged():
    """Tests and the demo model are trained on make_spine's films: changing them must be a deliberate act."""
    spine = make_spine(0)
    assert hashlib.sha256(spine.image.tobytes()).hexdigest() == (
        "c1c418f5e10d8bbe2f1f9131b7d28e987480148c30af526ffd48304cbf81d5da")
    assert hashlib.sha256(np.round(spine.landmarks, 6).tobytes()).hexdigest() == (
        "795458ae6cb99a5915dc33db25c62d8d1f83c395651275d10222c82d671cf244")


# ---------------------------------------------------------------- full-length films


def test_full_length_film_is_reproducible_from_its_seed():
    a, b = make_full_length(3, height=700), make_full_length(3, height=700)
    assert np.array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.landmarks, b.landmarks)
    assert a.metadata() == b.metadata()
    assert not np.array_equal(make_full_length(4, height=700).landmarks, a.landmarks)


@pytest.mark.parametrize(("height", "bit_depth", "rgb"), [(500, 8, False), (1200, 16, False), (900, 8, True),
                                                         (7500, 16, False)])
def test_full_length_sizes_bit_depths_and_screen_captures(height, bit_depth, rgb):
    film = make_full_length(height, height=height, bit_depth=bit_depth, rgb=rgb)
    assert film.image.shape == ((height, film.width, 3) if rgb else (height, film.width))
    assert 0.25 * height < film.width < 0.8 * height
    assert film.image.dtype == (np.uint16 if bit_depth == 16 else np.uint8)
    top = (1 << film.stored_bits) - 1
    assert film.stored_bits in ((8,) if bit_depth == 8 else (12, 14, 16))
    assert top // 2 < film.image.max() <= top
    assert make_full_length(1, height=800, width=300).image.shape == (800, 300)


def test_full_length_artefacts_are_borders_text_ruler_and_a_side_marker():
    films = [make_full_length(seed, height=600) for seed in range(8)]
    assert all(f.text and f.side_marker in ("L", "R") for f in films)
    bordered = [f for f in films if f.field != (0, 0, f.width, f.height)]
    for f in bordered:  # black outside the field, but for the burnt-in text at the top
        x0, y0, x1, y1 = f.field
        below_text = f.image[f.height // 5:]
        assert (f.image[y1:] == 0).all() and (below_text[:, :x0] == 0).all() and (below_text[:, x1:] == 0).all()
    assert bordered
    plain = make_full_length(0, height=600, artefacts=False)
    assert plain.field == (0, 0, plain.width, plain.height) and plain.text == () and plain.side_marker == ""


@pytest.mark.parametrize("kwargs", [dict(variant="oblique"), dict(bit_depth=12), dict(rgb=True, bit_depth=16),
                                    dict(height=100), dict(height=800, width=20), dict(start="hip"),
                                    dict(curve="Z")])
def test_full_length_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        make_full_length(0, **{"height": 800, **kwargs})


def test_full_length_landmarks_lie_in_the_film_in_anatomical_order():
    for seed in range(6):
        film = make_full_length(seed, height=900)
        h, w = film.image.shape
        assert film.levels_in_film == VERTEBRAE
        validate(film.landmarks, w, h)
        assert check_landmarks(film.landmarks, w, h) == [], seed
        x0, y0, x1, y1 = film.field
        pts = film.landmarks.reshape(-1, 2)
        assert (pts[:, 0] >= x0).all() and (pts[:, 0] < x1).all() and (pts[:, 1] >= y0).all() and (pts[:, 1] < y1).all()
        assert np.all(np.diff(centres(film.landmarks)[:, 1]) > 0)
        assert film.t1_top_row == pytest.approx(film.landmarks[0, :2, 1].mean())
        assert film.l5_bottom_row == pytest.approx(film.landmarks[-1, 2:, 1].mean())
        assert film.spine_box == pytest.approx((*pts.min(axis=0), *pts.max(axis=0)))


def test_full_length_curve_has_the_chosen_cobb_angle():
    film = make_full_length(5, height=1500, curve="C", cobb_degrees=30.0)
    result = cobb_angles(film.landmarks, film.height)
    assert max(result.as_array()) == pytest.approx(30.0, abs=6)
    assert film.curve == "C" and film.target_cobb == 30.0


def test_full_length_bones_are_drawn_where_the_landmarks_say():
    film = make_full_length(2, height=1500, noise=0.0, artefacts=False)
    img = cv2.GaussianBlur(film.image.astype(np.float32), (0, 0), 2.0)
    widths = np.linalg.norm(film.landmarks[:, 1] - film.landmarks[:, 0], axis=1)
    for (x, y), width in zip(centres(film.landmarks), widths):
        def at(dx, x=x, y=y):
            return img[round(y), int(np.clip(round(x + dx), 0, film.width - 1))]

        assert at(0) > at(-1.8 * width) and at(0) > at(1.8 * width)
    for x, y, radius in film.anatomy.femoral_heads:  # brighter than the thin iliac bone above it
        assert img[round(y), round(x)] > img[round(y - 1.8 * radius), round(x)]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ribs_clavicles_skull_and_pelvis_sit_at_their_levels(seed):
    film = make_full_length(seed, height=1000, start="skull" if seed % 2 else "neck",
                            end="femurs" if seed < 2 else "pelvis")
    a, lm = film.anatomy, film.landmarks
    rows = lm[..., 1]
    # Ribs 1-12 leave T1-T12 beside the body, run outwards and down; none below T12.
    for k in range(12):
        heads = a.rib_heads[k]
        assert (rows[k].min() <= heads[:, 1]).all() and (heads[:, 1] <= rows[k].max()).all()
        assert (a.rib_tips[k, :, 1] > heads[:, 1]).all()
        assert a.rib_tips[k, 0, 0] < heads[0, 0] < lm[k, [0, 2], 0].mean()
        assert lm[k, [1, 3], 0].mean() < heads[1, 0] < a.rib_tips[k, 1, 0]
    assert a.rib_heads[:, :, 1].max() < centres(lm)[12, 1]
    assert (rows[0].min() <= a.clavicles[:, 0, 1]).all() and (a.clavicles[:, 0, 1] <= rows[3].max()).all()
    assert a.clavicles[0, 1, 0] < a.clavicles[0, 0, 0] and a.clavicles[1, 0, 0] < a.clavicles[1, 1, 0]
    # Skull and C1-C7 above T1.
    neck = a.cervical.mean(axis=1)[:, 1]
    assert a.skull_top < a.cervical[0, :, 1].min() < a.chin < a.cervical[-1, 2:, 1].mean() < rows[0, :2].mean()
    assert np.all(np.diff(neck) > 0)
    assert (a.skull_top >= film.field[1]) == (a.start == "skull")
    # Sacrum below L5, iliac crests beside L4-L5, femoral heads below the sacrum's top, beside it.
    assert (a.sacrum[:2, 1] > lm[-1, 2:, 1]).all() and a.sacrum[2, 1] > a.sacrum[:2, 1].max()
    assert (centres(lm)[14, 1] < a.iliac_crests[:, 1]).all() and (a.iliac_crests[:, 1] < a.sacrum[:2, 1].max()).all()
    assert a.iliac_crests[0, 0] < lm[-1, :, 0].min() and a.iliac_crests[1, 0] > lm[-1, :, 0].max()
    heads = a.femoral_heads
    assert (heads[:, 1] > a.sacrum[:2, 1].max()).all() and (heads[:, 1] + heads[:, 2] < a.pelvis_bottom).all()
    assert heads[0, 0] < a.sacrum[2, 0] < heads[1, 0]
    assert (heads[:, 1] + heads[:, 2] < film.field[3]).all()
    assert film.thorax_to_pelvis == (a.lung_apex, a.pelvis_bottom)
    assert a.lung_apex < rows[0].max() and a.end in ("pelvis", "femurs")


def test_cut_off_film_ends_in_the_thorax():
    lengths = set()
    for seed in range(6):
        film = make_full_length(seed, height=800, variant="cut-off")
        k = len(film.levels_in_film)
        lengths.add(k)
        assert film.levels_in_film == VERTEBRAE[:k] and 5 <= k <= 10
        assert np.isfinite(film.landmarks[:k]).all() and np.isnan(film.landmarks[k:]).all()
        assert film.anatomy.end == "thorax" and film.l5_bottom_row > film.height
        assert film.landmarks[k - 1, :, 1].max() < film.field[3] < film.l5_bottom_row
    assert len(lengths) > 1


def test_upside_down_film_is_the_standard_film_turned():
    upright, turned = make_full_length(6, height=900), make_full_length(6, height=900, variant="upside-down")
    h, w = upright.image.shape
    np.testing.assert_allclose(turned.landmarks[..., 0], w - 1 - upright.landmarks[..., 0])
    np.testing.assert_allclose(turned.landmarks[..., 1], h - 1 - upright.landmarks[..., 1])
    # Burnt-in text stays upright, so compare the middle of the film only.
    middle = (slice(h // 4, 3 * h // 4), slice(3 * w // 10, 7 * w // 10))
    assert np.array_equal(turned.image[::-1, ::-1][middle], upright.image[middle])
    assert turned.levels_in_film == VERTEBRAE and turned.t1_top_row > turned.l5_bottom_row
    assert turned.anatomy.skull_top == pytest.approx(h - 1 - upright.anatomy.skull_top)
    assert "vertebra-order" in {f.rule for f in check_landmarks(turned.landmarks, w, h)}


def test_lateral_film_shows_kyphosis_and_lordosis():
    for seed in range(3):
        film = make_full_length(seed, height=900, variant="lateral")
        assert film.levels_in_film == VERTEBRAE and film.anatomy is None
        assert film.curve == "none" and np.isnan(film.target_cobb)
        c = centres(film.landmarks)
        chord = np.interp(c[:, 1], c[[0, -1], 1], c[[0, -1], 0])
        assert np.sign(c[6, 0] - chord[6]) == -np.sign(c[14, 0] - chord[14]) != 0


@pytest.mark.parametrize("variant", ["blank", "limb"])
def test_films_without_a_spine_say_so(variant):
    film = make_full_length(2, height=900, variant=variant)
    assert film.levels_in_film == () and np.isnan(film.landmarks).all()
    assert np.isnan(film.t1_top_row) and np.isnan(film.spine_box).all() and film.anatomy is None
    assert film.curve == "none" and film.image.std() > 0
    x0, y0, x1, y1 = film.field
    smooth = cv2.resize(film.image[y0:y1, x0:x1], (16, 32), interpolation=cv2.INTER_AREA).astype(float)
    profile = smooth.std(axis=1).mean()  # structure across the film: bones and body, not noise
    assert (profile < 3) == (variant == "blank")


def test_every_variant_has_json_ready_metadata():
    for variant in FULL_LENGTH_VARIANTS:
        meta = make_full_length(1, height=600, variant=variant).metadata()
        json.dumps(meta, allow_nan=False)
        assert meta["variant"] == variant and len(meta["landmarks"]) == 68


def test_synth_command_writes_full_length_films(tmp_path):
    assert main(["synth", str(tmp_path), "--full-length", "-n", "2", "--height", "700", "--seed", "5"]) == 0
    film = make_full_length(5, 700)
    name = "full-length-standard-00005.png"
    assert load_image(tmp_path / name).pixels.shape == film.image.shape
    np.testing.assert_allclose(read_json_label(tmp_path / f"{name}.landmarks.json").landmarks, film.landmarks)
    assert json.loads((tmp_path / f"{name}.truth.json").read_text())["levels_in_film"] == list(VERTEBRAE)
    assert main(["synth", str(tmp_path), "--full-length", "--variant", "cut-off", "-n", "1", "--height", "700",
                 "--bit-depth", "16"]) == 0
    truth = json.loads((tmp_path / "full-length-cut-off-00000.png.truth.json").read_text())
    assert truth["bit_depth"] == 16 and None in truth["landmarks"][-1]
    assert not (tmp_path / "full-length-cut-off-00000.png.landmarks.json").exists()
    assert main(["synth", str(tmp_path), "--full-length", "--height", "50"]) == 2
