"""Arguments, the training loop on megatron.core schedules, optimizer/scheduler, metrics, signals."""
