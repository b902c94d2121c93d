"""The cascade: step 1 places the 17 vertebra centres, step 2 the 4 corners of each vertebra.

Its parts, each present where the configuration has it (the recipes in spinecascade.training.recipes choose):
- step 1 starts from a regression of the 17 centres on the whole film (FilmStart), or from the mean shape as
  the paper does;
- the paper's stages: each crops patches around the current points, encodes each patch with a shared truncated
  MobileNetV2, concatenates the codes of one shape, regresses a few PCA coefficients with one linear layer and
  moves the points by the decoded offset (`n_stages` per step; the shipped model runs none);
- a level finder (level_finder.py) may end step 1;
- step 2 starts from the mean corner layout at the centres or from corner heatmaps (corner_heatmaps.py).
All coordinates here are pixels of the pre-processed (resized) image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spinecascade.landmarks import N_CORNERS, N_VERTEBRAE
from spinecascade.method.corner_heatmaps import CornerHeatmapConfig, CornerHeatmaps
from spinecascade.method.crops import crop_patches, resample_films, rotate, spine_directions
from spinecascade.method.encoder import TruncatedMobileNetV2
from spinecascade.method.level_finder import LevelConfig, LevelFinder
from spinecascade.method.preprocessing import PreprocessConfig
from spinecascade.method.shape_model import ShapeModel
from spinecascade.method.spine_locator import LocatorConfig, SpineLocator


@dataclass(frozen=True)
class StepConfig:
    crop_size: tuple[int, int]  # (width, height) of the window cut around a point, resized-image pixels
    patch_size: tuple[int, int]  # (width, height) the window is resampled to for the encoder
    n_components: int | None  # Q; None regresses raw offsets (no shape constraint)
    source_downsample: int = 1  # crop from an image average-pooled by this factor (anti-aliasing)


@dataclass(frozen=True)
class CascadeConfig:
    """The model's parts and sizes; the defaults are the paper's method (the `paper` recipe)."""

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    centre: StepConfig = field(default_factory=lambda: StepConfig((192, 80), (80, 48), 8, 2))
    corner: StepConfig = field(default_factory=lambda: StepConfig((48, 48), (48, 48), 6, 1))
    n_stages: int = 3
    centred_pca: bool = True
    feature_dim: int = 64
    # Turn step 2's start, the mean corner layout, to the local direction of the spine through the centres.
    align_corner_start: bool = False
    # (width, height) every film is resampled to for step 1's whole-film start; None starts from the mean shape.
    film_start: tuple[int, int] | None = None
    # The strip along the spine that places the levels after step 1's stages; None: step 1 ends with them.
    level_finder: LevelConfig | None = None
    # The window around each centre whose heatmaps start step 2; None: the mean corner layout starts it.
    corner_heatmaps: CornerHeatmapConfig | None = None
    # The network that finds the spine on the whole film before the cascade runs on a crop framed around it;
    # None: the cascade reads the whole film.
    spine_locator: LocatorConfig | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CascadeConfig:
        """From `as_dict`'s layout; KeyError, TypeError or ValueError for anything missing or wrong."""
        def step(s: dict) -> StepConfig:
            return StepConfig(tuple(s["crop_size"]), tuple(s["patch_size"]), s["n_components"],
                              s["source_downsample"])

        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown model setting(s) {sorted(unknown)}")
        film, levels, corners = d["film_start"], d["level_finder"], d["corner_heatmaps"]
        locator = d.get("spine_locator")  # absent from the files made before the locator
        config = cls(PreprocessConfig(**d["preprocess"]), step(d["centre"]), step(d["corner"]), d["n_stages"],
                     d["centred_pca"], d["feature_dim"], d["align_corner_start"], tuple(film) if film else None,
                     LevelConfig.from_dict(levels) if levels else None,
                     CornerHeatmapConfig.from_dict(corners) if corners else None,
                     LocatorConfig.from_dict(locator) if locator else None)
        config.check()
        return config

    def check(self) -> None:
        """ValueError naming the setting when the parts cannot make a cascade."""
        if not isinstance(self.n_stages, int) or isinstance(self.n_stages, bool) or self.n_stages < 0:
            raise ValueError(f"n_stages {self.n_stages!r}: expected a whole number of at least 0")
        if self.n_stages == 0 and self.film_start is None:
            raise ValueError("n_stages 0: step 1 without a stage needs a film start (film_start)")
        if self.n_stages == 0 and self.corner_heatmaps is None:
            raise ValueError("n_stages 0: step 2 without a stage needs corner heatmaps (corner_heatmaps)")
        if self.preprocess.height < 64:
            raise ValueError(f"preprocess.height {self.preprocess.height!r}: expected at least 64 pixels")


def normalise_pixels(images_u8: Tensor) -> Tensor:
    """uint8 images to the network's input range."""
    return standardise(images_u8.float() / 255.0)


def standardise(images01: Tensor) -> Tensor:
    """Images in [0, 1] to the network's input range."""
    return (images01 - 0.5) / 0.25


class Stage(nn.Module):
    """One cascade stage: shared encoder over the crops of a shape, linear regression of Q coefficients."""

    def __init__(self, step: StepConfig, n_points: int, feature_dim: int) -> None:
        super().__init__()
        self.step = step
        self.n_points = n_points
        self.shape_model = ShapeModel(n_points * 2, step.n_components)
        self.encoder = TruncatedMobileNetV2(1, feature_dim)
        self.head = nn.Linear(n_points * feature_dim, self.shape_model.n_components)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def coefficients(self, source: Tensor, points: Tensor) -> Tensor:
        """source: (B, 1, H, W) already downsampled by step.source_downsample; points: (B, S, n_points, 2)."""
        b, s = points.shape[:2]
        d = self.step.source_downsample
        crop = (self.step.crop_size[0] / d, self.step.crop_size[1] / d)
        flat = (points.reshape(b, s * self.n_points, 2) + 0.5) / d - 0.5
        patches = crop_patches(source, flat, crop, self.step.patch_size, self.encoder.input_stride)
        dtype = next(self.encoder.parameters()).dtype  # bfloat16 when the predictor asks for it
        codes = self.encoder(patches.to(dtype).contiguous(memory_format=torch.channels_last)).float()
        return self.head(codes.view(b * s, self.n_points * codes.shape[1]))

    def forward(self, source: Tensor, points: Tensor) -> Tensor:
        """Updated points, same shape as `points`."""
        offsets = self.shape_model.decode(self.coefficients(source, points))
        return points + offsets.view(points.shape)


class FilmStart(nn.Module):
    """Step 1's start: the 17 centres regressed from the whole film, as offsets from the mean normalised shape.

    Started from the mean shape, the stages must find a spine that can lie a fifth of the film's width away, and
    through 80-px windows they cannot tell one vertebra from its neighbours. The whole film shows where the
    spine runs and where it ends. The film is resampled to a fixed size (the aspect ratio dropped, so normalised
    coordinates carry over) and encoded by the same truncated MobileNetV2 without its pooling: the positions of
    the features are what the regression needs.
    """

    offset_scale = 0.1  # a unit of the head's output is a tenth of the film's width or height

    def __init__(self, film_size: tuple[int, int], feature_dim: int, source_downsample: int) -> None:
        super().__init__()
        self.film_size = film_size
        self.source_downsample = source_downsample
        self.encoder = TruncatedMobileNetV2(1, feature_dim)
        cells = [n // self.encoder.input_stride for n in film_size]
        for _ in range(4):  # the four stride-2 blocks of Table I, each rounding up
            cells = [(n + 1) // 2 for n in cells]
        self.head = nn.Linear(feature_dim * cells[0] * cells[1], N_VERTEBRAE * 2)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, source: Tensor, sizes: Tensor) -> Tensor:
        """Normalised offsets (B, 17, 2) from the mean shape; source: the images (B, 1, H, W) downsampled as step 1
        crops them; sizes: the (width, height) of the images before that."""
        films = resample_films(source, sizes / self.source_downsample, self.film_size, self.encoder.input_stride)
        dtype = next(self.encoder.parameters()).dtype
        features = self.encoder.features(films.to(dtype).contiguous(memory_format=torch.channels_last)).float()
        return self.offset_scale * self.head(features.flatten(1)).view(-1, N_VERTEBRAE, 2)


def downsample(images: Tensor, factor: int) -> Tensor:
    return images if factor == 1 else F.avg_pool2d(images, factor)


class Cascade(nn.Module):
    def __init__(self, config: CascadeConfig) -> None:
        super().__init__()
        self.config = config
        n = config.n_stages
        self.centre_stages = nn.ModuleList(Stage(config.centre, N_VERTEBRAE, config.feature_dim) for _ in range(n))
        self.corner_stages = nn.ModuleList(Stage(config.corner, N_CORNERS, config.feature_dim) for _ in range(n))
        self.film_start = (FilmStart(config.film_start, config.feature_dim, config.centre.source_downsample)
                           if config.film_start else None)
        self.level_finder = LevelFinder(config.level_finder) if config.level_finder else None
        self.corner_heatmaps = CornerHeatmaps(config.corner_heatmaps) if config.corner_heatmaps else None
        self.spine_locator = SpineLocator(config.spine_locator) if config.spine_locator else None
        # Mean normalised centres (Eq. 7) and mean corner offsets from the centre, per vertebra (measured in each
        # vertebra's upright frame when the config aligns the start with the spine).
        self.register_buffer("mean_centres", torch.zeros(N_VERTEBRAE, 2))
        self.register_buffer("mean_corner_offsets", torch.zeros(N_VERTEBRAE, N_CORNERS, 2))
        # How many stages of step 1 and of step 2 a prediction runs: all of them. A buffer, unlike the config, is
        # part of the model's version hash.
        self.register_buffer("prediction_stages", torch.tensor([n, n]))
        # Depthwise convolutions run about twice as fast on the CPU in channels-last layout.
        self.to(memory_format=torch.channels_last)

    def initial_centres(self, sizes: Tensor, source: Tensor | None = None) -> Tensor:
        """Step 1's start; sizes (B, 2) = (width, height) of the images.

        Without `source` (the images downsampled as step 1 crops them), or without a film start, it is S^0 of
        Eq. 8: the mean normalised shape scaled to each image.
        """
        normalised = self.mean_centres[None].expand(len(sizes), -1, -1)
        if source is not None and self.film_start is not None:
            normalised = normalised + self.film_start(source, sizes)
        return normalised * sizes[:, None, :]

    def initial_corners(self, centres: Tensor, images: Tensor | None = None) -> Tensor:
        """Step-2 start: the mean corner layout placed at each centre; (B, 17, 4, 2).

        Most of how one vertebra's corners differ from the mean layout is its tilt, and the tilt follows the
        spine; turned to the spine's direction through the centres, the start is nearer the truth. With `images`
        (normalised, full resolution) and corner heatmaps, the corners found around each centre start it instead.
        """
        if images is not None and self.corner_heatmaps is not None:
            return self.corner_heatmaps(images, centres)
        offsets = self.mean_corner_offsets[None].expand(len(centres), -1, -1, -1)
        if self.config.align_corner_start:
            offsets = rotate(offsets, -spine_directions(centres))
        return centres[:, :, None, :] + offsets

    def forward(self, images: Tensor, sizes: Tensor) -> tuple[Tensor, Tensor]:
        """Corners (B, 17, 4, 2) and centres (B, 17, 2) for normalised images (B, 1, H, W)."""
        centre_stages, corner_stages = self.prediction_stages.tolist()
        centres = self.run_centres(images, sizes, centre_stages)
        return self.run_corners(images, centres, corner_stages), centres

    def run_centres(self, images: Tensor, sizes: Tensor, stages: int | None = None) -> Tensor:
        source = downsample(images, self.config.centre.source_downsample)
        points = self.initial_centres(sizes, source)[:, None]
        for stage in self.centre_stages[:stages]:
            points = stage(source, points)
        if self.level_finder is not None:
            return self.level_finder(images, points[:, 0])
        return points[:, 0]

    def run_corners(self, images: Tensor, centres: Tensor, stages: int | None = None) -> Tensor:
        source = downsample(images, self.config.corner.source_downsample)
        points = self.initial_corners(centres, images)
        for stage in self.corner_stages[:stages]:
            points = stage(source, points)
        return points
