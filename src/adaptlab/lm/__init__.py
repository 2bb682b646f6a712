"""Language-model adaptation: corpus preparation, packing, continual pretraining, SFT and evaluation."""
