"""adaptlab: adapt language models to a domain when labelled data is scarce."""

__version__ = "0.1.0"
