"""A procedural stand-in for FER data: 48x48 grayscale faces for happy, neutral, sad and surprise.

No real FER data can be downloaded here, so the project draws its own default data set. Every image
is one cartoon face rendered in numpy (``render``), with identity, pose, lighting and
low-frequency nuisance factors drawn at random and an expression of random intensity.

On top of the rendered faces the generator injects the problems the ingest tool must find (label
noise with FER-like confusions, exact and near duplicates, label conflicts; see ``problems``) and
records the ground truth. The final order is shuffled so copies do not sit at the end.

Everything is deterministic from ``SynthConfig.seed``. ``generate()`` builds a :class:`SynthSet` in
memory; ``write_folders()`` writes it as class folders, split folders or a FER2013-style CSV,
together with ``truth.csv`` and ``synth.json``.

The package, by job:

- ``dataset``: :class:`SynthConfig` (what to generate) and :class:`SynthSet` (what comes out).
- ``render``: the faces, drawn a batch at a time.
- ``problems``: label noise, exact and near copies, label conflicts, the shuffle.
- ``layouts``: ``write_folders`` and the on-disk layouts.
"""

from __future__ import annotations

import numpy as np

from .dataset import EXPRESSIONS, SynthConfig, SynthSet, share_counts
from .layouts import FER2013_INDEX, LAYOUTS, SPLIT_SHARES, assign_splits, write_folders
from .problems import NEAR_COPY_KINDS, near_copy, noisy_labels, shuffled, with_copies
from .render import render_params, sample_params
from .subjects import SUBJECT_PATTERN, Subjects, assign_subjects

__all__ = [
    "EXPRESSIONS",
    "FER2013_INDEX",
    "LAYOUTS",
    "NEAR_COPY_KINDS",
    "SPLIT_SHARES",
    "SynthConfig",
    "SynthSet",
    "SUBJECT_PATTERN",
    "Subjects",
    "assign_splits",
    "generate",
    "near_copy",
    "write_folders",
]


_DEFAULT_CONFIG = SynthConfig()  # frozen, so one shared default instance is safe


def generate(config: SynthConfig = _DEFAULT_CONFIG, progress: bool | None = False) -> SynthSet:
    """Draw the data set described by ``config`` (deterministic from ``config.seed``)."""
    config.validate()
    rng = np.random.default_rng([config.seed, 0])
    classes = tuple(config.classes)
    n_dup = int(round(config.n * config.duplicate_share))
    n_base = config.n - n_dup

    true = np.repeat(np.arange(len(classes)), share_counts(n_base, config.class_shares))
    rng.shuffle(true)
    expr = np.array([EXPRESSIONS.index(c) for c in classes])[true]
    params = sample_params(rng, expr, config.expression_strength)
    subjects = None
    if config.subject_size:  # its own stream: the rest of the set is drawn as without subjects
        n_subjects = max(1, round(n_base / config.subject_size))
        subjects = assign_subjects(
            params, true, n_subjects, config.session_share, config.frame_share, np.random.default_rng([config.seed, 3])
        )
    images = render_params(params, config.size, config.seed, progress)
    originals = SynthSet(
        images=images,
        labels=noisy_labels(true, classes, config.label_noise, rng),
        true_labels=true,
        dup_of=np.full(n_base, -1, dtype=np.int64),
        dup_kind=np.full(n_base, "", dtype="<U5"),
        classes=classes,
        config=config,
        subjects=subjects,
    )
    return shuffled(with_copies(originals, n_dup, config.conflict_share, rng), rng)
