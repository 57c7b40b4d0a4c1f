"""The decision half of the online loop: the promotion gate (`gate.py`) and drift between windows (`drift.py`)."""
