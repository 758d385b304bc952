"""Process groups, devices and the CPU compatibility layer for megatron-core."""
