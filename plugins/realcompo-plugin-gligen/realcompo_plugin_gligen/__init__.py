"""GLIGEN (box-grounded SD) L2I adapter for realcompo-sdk (id ``gligen``)."""
