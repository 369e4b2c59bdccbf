"""Prefect task wrappers around the core library and storage: thin, one unit of retryable work each
(extract, score, rank, fine-tune, log, query). Populated by the pipeline issue."""
