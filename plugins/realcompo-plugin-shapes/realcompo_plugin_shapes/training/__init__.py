"""Training scripts of the Shapes models (need torch, diffusers, transformers): see train_all."""
