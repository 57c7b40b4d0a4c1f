"""Training: the Accelerate loop, its losses, checkpoints, and the recipe runner (train, evaluate, register)."""
