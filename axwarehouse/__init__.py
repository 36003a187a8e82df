"""axwarehouse: AxBench rebuilt as a DuckDB/Parquet warehouse."""

from pathlib import Path

__version__ = "0.1.0"

#: the shipped data (Concept10, instruction pools, upstream reference figures), wherever the package is installed
DATA_DIR = Path(__file__).resolve().parent / "data"
