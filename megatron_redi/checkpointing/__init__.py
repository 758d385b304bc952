"""The on-disk layout of checkpoint folders, shared by training (`training/checkpoint.py`) and
offline conversion (`conversion/`). Save and resume live in training; HF conversion in conversion."""
