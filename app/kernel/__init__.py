"""The few types every module may share and that belong to no module."""
