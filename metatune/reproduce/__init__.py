"""`metatune reproduce`: the paper's tables and figures, regenerated in dependency order.

The registry (`configs/reproduce.yaml`, read by `metatune.reproduce.registry`) lists every
experiment as data; `metatune.reproduce.runner` plans a profile, runs what is not up to date
and writes the report. Nothing here imports jax.
"""
