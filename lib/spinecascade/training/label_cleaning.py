"""Keep known-bad labels out of training: repair what the checker can safely repair, exclude the rest."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from spinecascade.io.dataset import Sample
from spinecascade.measurement.label_check import check_landmarks, repair_landmarks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CleanedSamples:
    kept: list[Sample]
    repaired: dict[str, list[str]]  # name -> rules the original label broke
    excluded: dict[str, list[str]]


def clean_samples(samples: list[Sample]) -> CleanedSamples:
    kept, repaired, excluded = [], {}, {}
    for s in samples:
        findings = check_landmarks(s.landmarks, s.width, s.height)
        if not findings:
            kept.append(s)
            continue
        rules = sorted({f.rule for f in findings})
        fixed = repair_landmarks(s.landmarks, s.width, s.height)
        if fixed is None:
            excluded[s.name] = rules
            log.warning("excluding %s from training: its label breaks %s", s.name, ", ".join(rules))
        else:
            repaired[s.name] = rules
            kept.append(replace(s, landmarks=fixed))
            log.warning("repaired the label of %s (%s)", s.name, ", ".join(rules))
    log.info("%d labels used (%d repaired), %d excluded", len(kept), len(repaired), len(excluded))
    return CleanedSamples(kept, repaired, excluded)
