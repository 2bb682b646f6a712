"""Model files besides plain HF directories: GGUF in and out, PEFT adapters, and the model cards (README.md) runs
write into their model directories."""
