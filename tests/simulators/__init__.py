"""Tests of the simulated city (simulators/)."""
