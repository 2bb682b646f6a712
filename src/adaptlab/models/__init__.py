"""Model files adaptlab reads besides HF directories (GGUF)."""
