"""The emotion label vocabulary: canonical names, aliases, and class selection."""

from __future__ import annotations

from ..errors import DataError

# Canonical names, in the order FER-style data sets conventionally list them.
CANONICAL = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt")

# The seeds' four-class task (capstone notebook).
FOUR_CLASS = ("happy", "neutral", "sad", "surprise")

_ALIASES = {
    "anger": "angry",
    "angry": "angry",
    "mad": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "happy_face": "happy",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "suprise": "surprise",
    "neutral": "neutral",
    "calm": "neutral",
    "contempt": "contempt",
}


def normalize(name: str) -> str | None:
    """Map a raw class name ('Sadness', 'surprised', 'HAPPY') to its canonical name, or None."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    return _ALIASES.get(key)


def parse_selection(spec: str | None) -> tuple[str, ...] | None:
    """Parse ``--classes happy,neutral,sad,surprise`` into canonical names (order kept).

    ``None`` or an empty string means "every class the source has".
    """
    if not spec:
        return None
    out: list[str] = []
    for raw in spec.split(","):
        if not raw.strip():
            continue
        canon = normalize(raw)
        if canon is None:
            raise DataError(f"--classes: unknown class {raw.strip()!r}; known classes are {', '.join(CANONICAL)}")
        if canon in out:
            raise DataError(f"--classes: class {canon!r} is listed twice")
        out.append(canon)
    if len(out) < 2:
        raise DataError("--classes: select at least two classes")
    return tuple(out)


def ordered(present: set[str]) -> tuple[str, ...]:
    """Present class names sorted alphabetically, as torchvision's ImageFolder and Keras order them."""
    return tuple(sorted(present))
