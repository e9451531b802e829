"""Vote data: every source becomes a list of ``VoteExample`` (see ``example.py``); ``sources`` reads them."""

from shala_pl.data.example import DataError, ReadResult, VoteExample

__all__ = ["DataError", "ReadResult", "VoteExample"]
