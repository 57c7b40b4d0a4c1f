"""Adapter types (one module per peft tuner) and adapter folders on disk (`files`)."""
