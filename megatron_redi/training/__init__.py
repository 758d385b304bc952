"""Training on megatron.core: config and flags, set-up and providers, the forward step, global batches,
the loop, optimizer and schedule, save/resume, DPO reference scoring, metrics, throughput, signals."""
