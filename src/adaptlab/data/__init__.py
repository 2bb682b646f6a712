"""Canonical records and converters from and to outside formats."""

from adaptlab.data.records import Record, read_records, write_records

__all__ = ["Record", "read_records", "write_records"]
