"""The toy reproduction (docs/TOY.md): a synthetic teacher, the whole pipeline on CPU, the results."""
