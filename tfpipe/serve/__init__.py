"""Serving what tfpipe trained: export (SavedModel with preprocessing inside), the batching
server (TensorFlow Serving's REST API) and the load generator behind benchmarks/serving.py."""
