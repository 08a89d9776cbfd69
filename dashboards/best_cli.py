"""``fer export-best``, ``fer retrain``, ``fer confirm`` (being written)."""


def add_parsers(sub) -> None:
    pass
