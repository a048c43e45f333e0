"""Experiments on a live model: interventions (the conditions, as context managers that
clean up), answers scored under each condition, activation patching, the logit lens,
attention to the image, and image embeddings."""
