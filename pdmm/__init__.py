"""PDMM: primal-dual method of multipliers consensus training (Xia, Yu & Li, arXiv 2503.10792;
spec pdmm.md): centralized (the server as a data-less PDMM node) and decentralized on a graph."""
