"""The inference runtime: image decoding and the batcher that feeds each model version."""
