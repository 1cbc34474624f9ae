"""The optarena service: workloads, the trial runner and (in later modules) the distributed parts.

``services.workloads`` and ``services.trainer`` are pure PyTorch and import nothing from Ray,
Optuna or MLflow, so one trial can be run and tested on its own.
"""
