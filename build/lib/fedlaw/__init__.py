"""FedLAW: learnable sparse aggregation weights (Parsa et al., arXiv 2511.03529; spec fedlaw.md)."""
