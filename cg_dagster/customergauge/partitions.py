"""Partitions of the CustomerGauge assets: one hourly partition is one sync window."""

import dagster as dg

# Keys look like "2026-11-29-09:00"; the latest partition is the last complete hour (end_offset=0).
hourly_partitions = dg.HourlyPartitionsDefinition(start_date="2026-01-01-00:00")
