"""Training: datasets of image/mask pairs, losses, and a plain training loop."""
