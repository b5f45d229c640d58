"""PyTorch models (training, export and the reference pipeline; never imported by serving)."""
