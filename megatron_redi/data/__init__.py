"""Data: schemas, chat templates, tokenisation, packing into micro-batches, sampling."""
