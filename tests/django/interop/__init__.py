"""The interop app: a model that can create tasks (Order) and the @background
tasks both sides run (tasks.py)."""
