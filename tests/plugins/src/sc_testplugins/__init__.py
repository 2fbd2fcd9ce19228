"""Test plugins for stable-core's engine tests."""
