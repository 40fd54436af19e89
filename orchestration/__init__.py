"""Running experiments: the config, the run directory, the training loop, grids and reports.

Above the algorithms (`algorithms`, `fedlaw`, `pdmm`), attacks, aggregators and the core
(`tff_byz`); below the command lines in `pipelines`.
"""
