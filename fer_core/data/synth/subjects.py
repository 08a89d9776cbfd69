"""Subjects: one person in several images, as in posed-expression sets (CK+, JAFFE, KDEF).

Applied to the drawing parameters before rendering (``assign_subjects``):

- **Identity.** Every image of a subject shares its face: shape, feature placement and sizes, skin,
  hair tone and hairline.
- **Sessions.** A share of images (``session_share``) also take the framing, background, lighting,
  hair-do and clothing of another image of the same subject: one recording session, possibly
  another expression, the head moved by a pixel or two between shots. Such pairs often sit within
  near-duplicate distance although their expressions differ: the case where a duplicate rule must
  not call them conflicting copies.
- **Frames.** A share of images (``frame_share``) are a later frame of another image's sequence:
  the same picture with a slightly stronger or weaker expression, a sub-pixel head movement and new
  sensor noise, and the same true expression. They are near duplicates of their first frame.

Images are named as in CK+, ``S{subject:03d}_{sequence:03d}_{frame:08d}``, so ``fer data ingest
--group-by '^[^/]+/(S\\d+)_'`` finds the subjects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# What `fer data ingest --group-by` takes to find the subjects in these names (scripts/main.sh spells it out).
SUBJECT_PATTERN = r"^[^/]+/(S\d+)_"

IDENTITY = (
    "face_a", "face_b", "skin", "hair", "hair_tone", "hairline", "eye_x", "eye_y", "eye_rx", "eye_ry", "iris_r",
    "white", "iris_tone", "brow_gap", "brow_hw", "brow_th", "brow_dark", "nose_dark", "mouth_y", "mouth_w", "lip_th",
    "lip_dark", "asym", "jaw",
)  # fmt: skip
SESSION = (
    "rot", "scale", "tx", "ty", "blur", "bg", "light", "light_dir", "contrast", "bright", "gamma", "noise", "hair_vol",
    "hair_len", "hair_tilt", "hair_side", "side_light", "neck_w", "body", "body_x", "body_y", "body_w", "body_tone",
    "bg_grad", "bg_dir", "clutter", "clutter_grid",
)  # fmt: skip
# A later frame: expression parameters scaled by up to +-SWAY, head moved by up to NUDGE (face units;
# one pixel of a 48-pixel image is 2/48 = 0.042).
SWAY = ("curve", "open_up", "open_lo", "eye_open", "brow_raise", "brow_inner", "brow_arch", "fold")
SWAY_SIZE, NUDGE = 0.06, 0.008
# Another shot in one session: the head moves by up to MOVE (about 2 pixels) and turns by up to TURN radians.
MOVE, TURN = 0.1, 0.06


@dataclass
class Subjects:
    """Who each image shows: subject, sequence and frame numbers, and the first frame of its sequence."""

    subject: np.ndarray  # (n,) int64
    sequence: np.ndarray  # (n,) int64, numbered from 1 within each subject
    frame: np.ndarray  # (n,) int64, unique within a sequence
    frame_of: np.ndarray  # (n,) int64 index of the sequence's first frame, -1 for a first frame

    def stems(self) -> list[str]:
        """CK+-style file stems: ``S012_003_00000017``."""
        return [f"S{s:03d}_{q:03d}_{f:08d}" for s, q, f in zip(self.subject, self.sequence, self.frame, strict=True)]

    def take(self, index: np.ndarray) -> Subjects:
        """These rows, in this order (``frame_of`` follows them; -1 where the first frame is not among them)."""
        where = np.full(len(self.subject), -1, np.int64)
        where[index] = np.arange(len(index))
        frame_of = self.frame_of[index]
        frame_of = np.where(frame_of >= 0, where[np.maximum(frame_of, 0)], -1)
        return Subjects(self.subject[index], self.sequence[index], self.frame[index], frame_of.astype(np.int64))


def assign_subjects(
    params: dict[str, np.ndarray],
    true: np.ndarray,
    n_subjects: int,
    session_share: float,
    frame_share: float,
    rng: np.random.Generator,
) -> Subjects:
    """Tie ``params`` (edited in place) into subjects, sessions and frames (a frame keeps its class ``true``)."""
    n = len(true)
    subject = rng.integers(0, n_subjects, n)
    n_frames = int(round(frame_share * n))
    frames = rng.choice(n, n_frames, replace=False) if n_frames else np.empty(0, np.int64)
    is_frame = np.zeros(n, bool)
    is_frame[frames] = True
    firsts = np.flatnonzero(~is_frame)
    # A later frame shows its first frame's expression: the parent is drawn among first frames of
    # the same class, so the class shares stay as drawn.
    parent = np.array([rng.choice(firsts[true[firsts] == true[i]]) for i in frames], dtype=np.int64)
    subject[frames] = subject[parent]

    _, proto = np.unique(subject, return_index=True)
    proto_of = np.full(n_subjects, -1, np.int64)
    proto_of[subject[proto]] = proto
    for key in IDENTITY:
        params[key][:] = params[key][proto_of[subject]]

    # Sessions: an image takes the setting of an earlier first frame of the same subject.
    for j in rng.choice(firsts, int(round(session_share * n)), replace=False) if len(firsts) else []:
        same = firsts[(subject[firsts] == subject[j]) & (firsts < j)]
        if len(same):
            q = int(rng.choice(same))
            for key in SESSION:
                params[key][j] = params[key][q]
            params["tx"][j] += rng.uniform(-MOVE, MOVE)
            params["ty"][j] += rng.uniform(-MOVE, MOVE)
            params["rot"][j] += rng.uniform(-TURN, TURN)

    for i, p in zip(frames, parent, strict=True):
        for val in params.values():
            val[i] = val[p]
        for key in SWAY:
            params[key][i] *= 1.0 + rng.uniform(-SWAY_SIZE, SWAY_SIZE)
        params["tx"][i] += rng.uniform(-NUDGE, NUDGE)
        params["ty"][i] += rng.uniform(-NUDGE, NUDGE)

    return _numbered(subject, frames, parent, firsts, rng)


def _numbered(
    subject: np.ndarray, frames: np.ndarray, parent: np.ndarray, firsts: np.ndarray, rng: np.random.Generator
) -> Subjects:
    """Sequence numbers per subject (first frames in order) and frame numbers per sequence."""
    n = len(subject)
    sequence = np.zeros(n, np.int64)
    frame = np.zeros(n, np.int64)
    frame_of = np.full(n, -1, np.int64)
    count: dict[int, int] = {}
    for i in firsts:
        s = int(subject[i])
        count[s] = count.get(s, 0) + 1
        sequence[i] = count[s]
        frame[i] = int(rng.integers(8, 30))  # CK+ keeps the last, most expressive frames
    last = {int(i): int(frame[i]) for i in firsts}
    for i, p in zip(frames, parent, strict=True):
        sequence[i] = sequence[p]
        last[int(p)] += 1
        frame[i] = last[int(p)]
        frame_of[i] = p
    return Subjects(subject.astype(np.int64), sequence, frame, frame_of)


def extend_for_copies(subjects: Subjects, originals: np.ndarray) -> Subjects:
    """Rows for injected copies of ``originals``: same subject and sequence, the next free frame number."""
    frame = subjects.frame.copy()
    nxt: dict[tuple[int, int], int] = {}
    for s, q, f in zip(subjects.subject, subjects.sequence, frame, strict=True):
        nxt[(int(s), int(q))] = max(nxt.get((int(s), int(q)), 0), int(f) + 1)
    new_frames = []
    for o in originals:
        key = (int(subjects.subject[o]), int(subjects.sequence[o]))
        new_frames.append(nxt[key])
        nxt[key] += 1
    return Subjects(
        np.concatenate([subjects.subject, subjects.subject[originals]]),
        np.concatenate([subjects.sequence, subjects.sequence[originals]]),
        np.concatenate([frame, np.array(new_frames, np.int64)]),
        np.concatenate([subjects.frame_of, np.full(len(originals), -1, np.int64)]),
    )
