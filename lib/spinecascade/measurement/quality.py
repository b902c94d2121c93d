"""The review flag of a prediction: whether a person should look at it before it is used, and why.

A wrong answer without a flag is the worst outcome; a flag on a good film costs a clinician a look. Two kinds of
evidence are read off the answer itself:
- its landmarks break the structure every spine has (the label checker's rules: vertebrae out of order,
  doubled, overlapping, implausibly sized, or outside the film);
- the model disagrees with itself: each film is predicted with its mirror, and where the two answers differ by
  more than a share of a vertebra's height the points are flagged, and the film when they differ on average.
The limits are shares of the answer's own median vertebra height, so that one limit fits films of any size.
Where the model has a spine locator, what it found is a third kind: a spine that runs out of the film (T1 or L5
not in it), and a locator unsure where T1 begins or L5 ends (the spread of its row distribution, in levels).
A fourth is where the answer sits in the rows it was read from: the training films end one to one and a half levels
below L5 and begin half a level to a level above T1, and an answer with much more film below its L5 than above its
T1 has, on most of the films where that happens, put every vertebra a level too high (L5 on L4).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from spinecascade.landmarks import N_POINTS, N_VERTEBRAE, SpineExtent
from spinecascade.measurement.label_check import RULES, check_landmarks

# Mean mirror disagreement, as a share of the median vertebra height, above which the film is flagged, and the
# per-landmark share above which a point is. Set between the shipped model's tight films (median 0.045) and the
# 30 unlabelled full-length films it misreads (all above 0.28); the rates they give: docs/experiments.md.
FILM_UNCERTAINTY_LIMIT = 0.25
POINT_UNCERTAINTY_LIMIT = 0.5
# How far, in levels, T1's top may lie above the film's top edge or L5's bottom below its bottom edge before the
# film counts as not showing it; and the spread of the locator's rows, in levels, above which the levels are
# uncertain (docs/experiments.md, 2026-12-05 afternoon).
OUTSIDE_LIMIT = 0.5
LOCATOR_SPREAD_LIMIT = 1.0
# The answer's T1 and the locator's this many levels apart (the answer's levels): one of them names the levels wrong.
T1_DISAGREEMENT_LIMIT = 0.5
# The film read below the answer's L5 minus the film read above its T1, in the answer's levels, above which its
# levels are uncertain. Set on the 2016 cascade's answers for the January-2017 films, where it flags 13 of the 18
# films a level too high that had no flag and 2 of the 69 good ones without (docs/experiments.md, 2026-12-05,
# morning); the training labels themselves lie above it on 19 % of the films.
SPINE_HIGH_LIMIT = 1.2

# Each kind of reason, and a phrase that its text holds and no other reason's: how an evaluation counts what each
# kind catches (`spinecascade evaluate`).
REASON_KINDS: dict[str, str] = {
    "no_spine": "no spine found",
    "locator_t1_apart": "the spine locator puts T1's top",
    "out_at_top": "runs out of the film at the top",
    "out_at_bottom": "runs out of the film at the bottom",
    "t1_unclear": "cannot tell where T1 begins",
    "l5_unclear": "cannot tell where L5 ends",
    "sits_high": "the spine sits high in the film",
    "implausible": "do not form a plausible spine",
    "film_uncertain": "above this film's limit",
    "points_uncertain": "landmarks uncertain (more than",
}


@dataclass(frozen=True)
class Quality:
    review_needed: bool
    reasons: list[str] = field(default_factory=list)
    flagged_landmarks: list[int] = field(default_factory=list)  # indices 0..67 in the landmark order

    def as_dict(self) -> dict:
        return asdict(self)


def median_vertebra_height(landmarks: np.ndarray) -> float:
    """The median distance between the middles of each vertebra's top and bottom endplates, in pixels."""
    lm = landmarks.reshape(-1, 4, 2)
    return float(np.median(np.linalg.norm(lm[:, 2:].mean(axis=1) - lm[:, :2].mean(axis=1), axis=-1)))


def reason_kind(reason: str) -> str:
    """The kind (a key of REASON_KINDS) of one of the review flag's reasons."""
    kinds = [kind for kind, phrase in REASON_KINDS.items() if phrase in reason]
    if len(kinds) != 1:
        raise ValueError(f"not one of the review flag's reasons: {reason!r}")
    return kinds[0]


def answer_rows(landmarks: np.ndarray) -> tuple[float, float]:
    """The rows of an answer's ((17, 4, 2) landmarks) T1 top and L5 bottom: the means of those endplates' corners."""
    lm = np.asarray(landmarks).reshape(-1, 4, 2)
    return float(lm[0, :2, 1].mean()), float(lm[-1, 2:, 1].mean())


def spine_reasons(spine: SpineExtent, landmarks: np.ndarray, height: int, read_to_row: int) -> list[str]:
    """What the spine locator's finding says against an answer ((17, 4, 2) landmarks) read from the film down to
    `read_to_row` (the crop's bottom; the film's height where the answer was read to the film's end). The locator
    knows T1's top well on any film, L5's bottom on full-length films only: its doubts about L5 count where the
    crop ended at L5, and L5 below the film where it is sure of it; an answer whose T1 lies half a level or more
    from the locator's is flagged."""
    if spine.l5_bottom - spine.t1_top < 0.05 * height:
        return ["no spine found: the locator found no stretch from T1 to L5 in the film"]
    reasons = []
    answer_top, answer_bottom = answer_rows(landmarks)
    answer_level = abs(answer_bottom - answer_top) / N_VERTEBRAE
    apart = abs(answer_top - spine.t1_top) / max(answer_level, 1e-9)
    if apart >= T1_DISAGREEMENT_LIMIT:
        reasons.append(f"levels uncertain: the spine locator puts T1's top {apart:.1f} levels from this answer's")
    level = spine.level
    l5_sure = spine.l5_spread <= LOCATOR_SPREAD_LIMIT
    if spine.t1_top < -OUTSIDE_LIMIT * level:
        reasons.append("levels uncertain: the spine runs out of the film at the top, T1 and the first ribs are not "
                       "in it")
    if l5_sure and spine.l5_bottom > height + OUTSIDE_LIMIT * level:
        reasons.append("levels uncertain: the spine runs out of the film at the bottom, L5 and the sacrum are not "
                       "in it")
    if spine.t1_spread > LOCATOR_SPREAD_LIMIT:
        reasons.append(f"levels uncertain: the locator cannot tell where T1 begins (spread {spine.t1_spread:.1f} "
                       f"levels, above the limit of {LOCATOR_SPREAD_LIMIT:g})")
    if not l5_sure and read_to_row < height:
        reasons.append(f"levels uncertain: the locator cannot tell where L5 ends (spread {spine.l5_spread:.1f} "
                       f"levels, above the limit of {LOCATOR_SPREAD_LIMIT:g})")
    return reasons


def placement_reasons(landmarks: np.ndarray, rows_read: tuple[float, float]) -> list[str]:
    """An answer ((17, 4, 2) landmarks) whose spine sits high in the rows (top, bottom) it was read from: much
    more film below its L5 than above its T1 (SPINE_HIGH_LIMIT, in the answer's levels). An answer that does not
    run downwards has no levels to measure by; the label checker's rules flag it."""
    t1_top, l5_bottom = answer_rows(landmarks)
    if l5_bottom <= t1_top:
        return []
    level = (l5_bottom - t1_top) / N_VERTEBRAE
    above, below = (t1_top - rows_read[0]) / level, (rows_read[1] - l5_bottom) / level
    if below - above <= SPINE_HIGH_LIMIT:
        return []
    return [f"levels uncertain: the spine sits high in the film, {below:.1f} levels of film below L5 and "
            f"{max(above, 0.0):.1f} above T1; on such films the answer is often a level too high (L5 on L4)"]


def assess(landmarks: np.ndarray, uncertainty: np.ndarray | None, width: int, height: int,
           spine: SpineExtent | None = None, rows_read: tuple[float, float] | None = None) -> Quality:
    """The review flag of an answer: (17, 4, 2) landmarks in the film's pixels, their mirror disagreement (68,)
    in pixels (None when the answer was made without the mirror), the spine locator's finding (None without one)
    and the top and bottom rows of the crop the answer was read from (None: the whole film)."""
    rows_read = (0, height) if rows_read is None else rows_read
    reasons = spine_reasons(spine, landmarks, height, int(rows_read[1])) if spine else []
    reasons += placement_reasons(landmarks, rows_read)
    flagged: set[int] = set()
    findings = check_landmarks(landmarks, width, height)
    for rule in sorted({f.rule for f in findings}):
        where = sorted({f.vertebra for f in findings if f.rule == rule and f.vertebra})
        at = f" ({', '.join(where)})" if where else ""
        reasons.append(f"the landmarks do not form a plausible spine: {RULES[rule]}{at}")
    scale = max(median_vertebra_height(landmarks), 1.0)
    if uncertainty is not None:
        points = np.flatnonzero(uncertainty > POINT_UNCERTAINTY_LIMIT * scale)
        flagged.update(int(i) for i in points)
        mean = float(uncertainty.mean())
        limit = FILM_UNCERTAINTY_LIMIT * scale
        if mean > limit:
            reasons.append(f"landmark uncertainty {mean:.0f} px above this film's limit of {limit:.0f} px "
                           f"({FILM_UNCERTAINTY_LIMIT:g} of a vertebra's height)")
        elif len(points):
            reasons.append(f"{len(points)} of {N_POINTS} landmarks uncertain (more than {POINT_UNCERTAINTY_LIMIT:g} "
                           "of a vertebra's height)")
    return Quality(bool(reasons), reasons, sorted(flagged))
