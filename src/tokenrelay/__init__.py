"""tokenrelay: stream AI responses to people in real time."""

__version__ = "0.1.0"

__all__ = ["__version__"]
