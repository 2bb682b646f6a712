"""FRACTAL: sentence-level scores learned from response-level labels (multiple-instance learning)."""
