"""RLHF on personal risk preferences: profiles, feedback, reward model, DPO/KTO, model registry."""
