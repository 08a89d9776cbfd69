"""``fer dashboard build|serve|compare`` (being written)."""


def add_parsers(sub) -> None:
    pass
