def extract() -> None:
    """Placeholder."""
