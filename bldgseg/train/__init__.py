"""Training: sample loaders, augmentation, splits, losses, validation and the training loop."""
