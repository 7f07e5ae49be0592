"""sleepfm: sleep foundation models on polysomnography."""
__version__ = "0.1.0"
