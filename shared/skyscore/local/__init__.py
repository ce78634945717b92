"""The local embedded runtime: its home directory, HTTP front end, inbox and the demo."""
