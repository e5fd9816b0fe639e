"""Trainers: GRPO-family, PPO, SFT (design/METHODS.md)."""
