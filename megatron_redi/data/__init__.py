"""Data: readers (JSONL, Parquet, save_to_disk), schemas, chat templates, tokenisation, packing into
micro-batches, sampling. Imports nothing from prep, grading or evaluation."""
