"""Converters between outside formats and the canonical :class:`~adaptlab.data.records.Record`."""
