"""Tests of the TTP party."""
