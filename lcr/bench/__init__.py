"""`lcr bench`: engine performance on an AA-LCR-shaped workload (run, workload, policies,
calibrate, layouts). See lcr.bench.run."""

from lcr.bench.run import bench_config, run_bench
from lcr.bench.workload import output_lengths, workload

__all__ = ["bench_config", "output_lengths", "run_bench", "workload"]
