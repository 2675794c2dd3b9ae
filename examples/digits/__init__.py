"""LoRA on the layers each method chooses, beyond restoration: a small ViT on scikit-learn's digits, adapted to
shifted and relabelled versions (``python -m examples.digits --out runs/digits``)."""
