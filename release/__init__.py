"""Release: from a sweep's winning trial to a shipped model.

``export`` (``fer export-best``: the winner's trainer config with its provenance), ``provenance``
(that ``provenance:`` block: what it holds, writing it, reading it back), ``confirm``
(``fer confirm``: the top trials re-trained with fresh seeds, ranked by their mean), ``retrain``
(``fer retrain``: the exported config trained on train+val, the model folder), ``cli`` (their
subcommands). Reads experiments through ``sweeps.experiment`` / ``experiment_store``; never imports
the review code (``dashboards``).
"""
