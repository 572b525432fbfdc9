"""metatune: meta-learned hyperparameter tuners over structured search spaces."""

__version__ = "0.1.0"
