"""fer_core: data, models, losses and the trainer behind fer-sweep."""

__version__ = "0.1.0"
