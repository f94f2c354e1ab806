"""inservice-etl: teacher in-service training records, from partner uploads to the warehouse."""

__version__ = "0.1.0"
