"""Parameter sweeps on Dask: the engine, one point, the tables and the clusters."""
