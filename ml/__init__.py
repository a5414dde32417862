"""Model training for bp-stream: ``python -m ml.train_model`` builds the risk model the consumer loads."""
