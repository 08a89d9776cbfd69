"""What the synthetic-face generator is asked for (:class:`SynthConfig`) and what it returns (:class:`SynthSet`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import DataError
from ..classes import FOUR_CLASS
from .subjects import Subjects

EXPRESSIONS = FOUR_CLASS  # the expressions the renderer can draw


@dataclass(frozen=True)
class SynthConfig:
    """What to generate.

    Attributes:
        n: total number of images, injected duplicates included (``round(n * duplicate_share)``
            of them are copies of the other ones).
        size: image side in pixels.
        label_noise: share of the original (non-copy) images whose given label is wrong. Copies
            inherit their original's given label, conflicts excepted. The default 0.1 with the
            default ``expression_strength`` 2 was chosen on real FER2013 (README, "On real data"): the
            plain CNN's recipe learns about as fast as on the real 4 classes, and with every regularizer
            off it peaks, then falls while train accuracy reaches 100%, as the real curve does (0.2
            learned too slowly; 0.3 at strength 1 learned nothing in 15 epochs).
        duplicate_share: share of ``n`` that are copies of another image (exact or near, half
            each; below 0.5, since every copy has its own original).
        conflict_share: share of the copies whose label differs from their original's (default:
            a quarter, i.e. 1 % of the set, 40 conflicting pairs in the default 4000 images).
        seed: the random seed; the same config always yields the same set.
        class_shares: share of each class among the originals (normalised to sum to 1).
        classes: class names, each one of happy, neutral, sad, surprise; labels index this tuple.
        subject_size: mean number of original images per subject (``synth.subjects``); 0: every
            face is a different person and files are named by id.
        session_share: share of the originals that take the setting (framing, background,
            lighting, clothing) of another image of their subject: one session, possibly another
            expression.
        frame_share: share of the originals that are a later, near-identical frame of another
            image's sequence (same true expression).
        expression_strength: scale of every expression's intensity (mouth, eyes, brows, folds);
            1 draws them as ``render`` describes, up to 2 exaggerates them. Intensities near 0 stay
            near 0 (the ambiguous faces), so it widens the gap between clear and ambiguous faces.
            At 1 the plain CNN's recipe found no signal in 15 epochs (majority class, 33%, label noise
            0.1 or 0.3); at 2 (default) with label noise 0.1 it learns as on real faces.
    """

    n: int = 4000
    size: int = 48
    label_noise: float = 0.1
    duplicate_share: float = 0.04
    conflict_share: float = 0.25
    seed: int = 0
    class_shares: tuple[float, ...] = (0.357, 0.246, 0.244, 0.152)
    classes: tuple[str, ...] = FOUR_CLASS
    subject_size: int = 25
    session_share: float = 0.1
    frame_share: float = 0.08
    expression_strength: float = 2.0

    def validate(self) -> None:
        """Raise DataError naming the first bad field."""
        if self.n < 1:
            raise DataError(f"synth: n must be at least 1, got {self.n}")
        if self.size < 16:
            raise DataError(f"synth: size must be at least 16 pixels, got {self.size}")
        if self.subject_size < 0:
            raise DataError(f"synth: subject_size must be 0 (no subjects) or more, got {self.subject_size}")
        shares: tuple[tuple[str, float], ...] = (
            ("label_noise", 1.0),
            ("duplicate_share", 0.5),
            ("conflict_share", 1.0),
            ("session_share", 0.5),
            ("frame_share", 0.5),
        )
        for name, top in shares:
            value = getattr(self, name)
            if not 0.0 <= value < top:
                raise DataError(f"synth: {name} must lie in [0, {top:g}), got {value}")
        if not 0.0 < self.expression_strength <= 2.0:
            raise DataError(f"synth: expression_strength must lie in (0, 2], got {self.expression_strength}")
        unknown = [c for c in self.classes if c not in EXPRESSIONS]
        if unknown or len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
            raise DataError(
                f"synth: classes must be at least two distinct names out of "
                f"{', '.join(EXPRESSIONS)}, got {self.classes}"
            )
        if len(self.class_shares) != len(self.classes) or min(self.class_shares) < 0 or sum(self.class_shares) <= 0:
            raise DataError(
                f"synth: class_shares must be {len(self.classes)} non-negative numbers "
                f"with a positive sum, got {self.class_shares}"
            )


@dataclass
class SynthSet:
    """A generated data set with its ground truth.

    Attributes:
        images: (N, size, size) uint8.
        labels: (N,) int64 given labels (possibly wrong), indices into ``classes``.
        true_labels: (N,) int64 the class each face was drawn as.
        dup_of: (N,) int64 index of the original an injected copy was made from, else -1.
        dup_kind: (N,) str "exact", "near" or "" (not a copy).
        classes: class names.
        config: the config it was generated from.
        subjects: who each image shows (subject, sequence, frame), or None when every face is a
            different person.
    """

    images: np.ndarray
    labels: np.ndarray
    true_labels: np.ndarray
    dup_of: np.ndarray
    dup_kind: np.ndarray
    classes: tuple[str, ...]
    config: SynthConfig | None = None
    subjects: Subjects | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def noisy(self) -> np.ndarray:
        """Bool mask of samples whose given label is not their true class."""
        return self.labels != self.true_labels

    @property
    def conflict(self) -> np.ndarray:
        """Bool mask of copies whose given label differs from their original's."""
        is_copy = self.dup_of >= 0
        out = np.zeros(len(self), dtype=bool)
        out[is_copy] = self.labels[is_copy] != self.labels[self.dup_of[is_copy]]
        return out

    def ids(self) -> list[str]:
        """Stable ids, ``synth_000123`` for index 123."""
        return [f"synth_{i:06d}" for i in range(len(self))]

    def stems(self) -> list[str]:
        """File names without suffix: CK+-style ``S012_003_00000017`` with subjects, else the ids."""
        return self.subjects.stems() if self.subjects is not None else self.ids()


def share_counts(n: int, shares) -> np.ndarray:
    """Split n into integer counts proportional to shares (largest remainder)."""
    raw = np.asarray(shares, dtype=float) / float(np.sum(shares)) * n
    counts = np.floor(raw).astype(np.int64)
    counts[np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]] += 1
    return counts
