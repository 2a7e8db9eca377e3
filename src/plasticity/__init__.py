"""plasticity: how pretraining choices change how well a language model can later be fine-tuned."""

__version__ = "0.1.0"
