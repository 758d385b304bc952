"""Offline data preparation: the REDI dataset builder (`builder.build`, CLI `tools/build_redi_data.py`), its
rules, re-verification, output and report, benchmark decontamination and synthetic raw data.

Sits above `megatron_redi.data` and `megatron_redi.grading`; imports nothing from training or megatron.
"""
