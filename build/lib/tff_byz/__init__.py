"""tff-byz: Byzantine-robust federated learning on TensorFlow Federated."""
