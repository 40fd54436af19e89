"""PDMM: primal-dual method of multipliers consensus training (Xia, Yu & Li, arXiv 2503.10792;
spec pdmm.md): centralized (the server as a data-less PDMM node) and decentralized on a graph."""

# K, the local SGD steps of PDMM's inexact prox when neither pdmm:local_steps= nor
# --local_steps says otherwise (pdmm.md §5, the authors' group's code).
DEFAULT_LOCAL_STEPS = 10
