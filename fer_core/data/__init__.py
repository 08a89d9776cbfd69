"""Ingest FER data sets into deduplicated, stratified, versioned Arrow/Parquet shards."""
