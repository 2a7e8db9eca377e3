"""One training-loop core (``loop.train``) shared by pretraining and fine-tuning."""
