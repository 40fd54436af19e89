"""tff-byz: Byzantine-robust federated learning on TensorFlow Federated."""

import setuptools

setuptools.setup(
    name="tff-byz",
    version="0.1.0",
    description="Byzantine-robust aggregation, attacks, FedLAW and PDMM for TFF",
    packages=setuptools.find_packages(
        include=["orchestration", "orchestration.*", "algorithms", "algorithms.*",
                 "tff_byz", "tff_byz.*", "aggregators", "aggregators.*",
                 "attacks", "attacks.*", "fedlaw", "fedlaw.*", "pdmm", "pdmm.*",
                 "pipelines", "pipelines.*", "benchmarks", "benchmarks.*",
                 "examples", "examples.*"]),
    package_data={"examples": ["*.toml"]},
    python_requires=">=3.11,<3.12",
    # The pinned stack is installed by `make install` from requirements.txt +
    # constraints.txt (TFF with --no-deps); see BUILD_NOTES.md.
    install_requires=[],
)
