"""Model merging: pure merge methods, streaming safetensors I/O, vocabulary alignment, λ search."""
