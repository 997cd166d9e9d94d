"""lcr: the AA-LCR long-context reasoning benchmark with vLLM on a Slurm cluster.

    lcr demo                                  # whole pipeline, sample data, tiny local model
    lcr submit jobs/llama31-8b-aalcr.toml     # the real run on a cluster
"""

__version__ = "0.1.0"
