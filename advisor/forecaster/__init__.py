"""The forecaster: model store and loading, prompts, generation, parsing, SFT, evaluation."""
