"""axwarehouse: AxBench rebuilt as a DuckDB/Parquet warehouse."""

__version__ = "0.1.0"
