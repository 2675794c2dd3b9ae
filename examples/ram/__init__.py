"""The RAM reference pipeline: mask pre-training, MAC analysis, fine-tuning, evaluation."""
